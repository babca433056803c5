"""Kept for one release: the old import path of `consumer.ops.http` (issue 16), for
tests, bench/, deploy scripts and users. New code imports `consumer.ops.http`."""

from consumer.ops.http import *  # noqa: F403
