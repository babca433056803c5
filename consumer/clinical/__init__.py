"""The clinical middle: pure (no Kafka, no fastavro, no metrics; an injected clock).

model, classify, therapies, facts, rules, alerts, patient (the aggregate), pipeline, validate.
Imports only consumer.clinical, consumer.errors and consumer.resources (tests/unit/test_layers.py).
"""
