"""Kept for one release: the old import path of `consumer.avro.registry` (issue 16), for
tests, bench/, deploy scripts and users. New code imports `consumer.avro.registry`."""

from consumer.avro.registry import *  # noqa: F403
