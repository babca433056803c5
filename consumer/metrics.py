"""Kept for one release: the old import path of `consumer.ops.metrics` (issue 16), for
tests, bench/, deploy scripts and users. New code imports `consumer.ops.metrics`."""

from consumer.ops.metrics import *  # noqa: F403
