"""The Kafka runtime: the service's loop, delivery guarantees, rebalances, restore and start-up.

Only `consumer.runtime.kafka` imports kafka-python; everything else here talks to the
Protocols it declares, so tests/runtime/fakes.py can stand in for a broker.
"""
