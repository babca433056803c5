"""Operations: metrics (the only importer of prometheus_client with http), the health and
metrics HTTP endpoint, JSON logs and the log event names (events.py).
"""
