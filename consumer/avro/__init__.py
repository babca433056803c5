"""Bytes <-> records: the wire framings, the schema registry client, the codecs and the
output encoders. The only users of fastavro besides consumer.resources and consumer.config.
"""
