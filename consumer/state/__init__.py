"""Patient state as bytes: the per-partition store (store.py) over a backend (backends.py:
memory or a sqlite file). No Kafka; of the clinical layer only the state types it stores.
"""
