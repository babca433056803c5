"""Kept for one release: the old import path of `consumer.avro.wire` (issue 16), for
tests, bench/, deploy scripts and users. New code imports `consumer.avro.wire`."""

from consumer.avro.wire import *  # noqa: F403
