"""Kept for one release: the old import path of `consumer.avro.codec` (issue 16), for
tests, bench/, deploy scripts and users. New code imports `consumer.avro.codec`."""

from consumer.avro.codec import *  # noqa: F403
