"""Kept for one release: the old import path of `consumer.ops.logs` (issue 16), for
tests, bench/, deploy scripts and users. New code imports `consumer.ops.logs`."""

from consumer.ops.logs import *  # noqa: F403
