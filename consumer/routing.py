"""Kept for one release: the old import path of `consumer.runtime.routing` (issue 16), for
tests, bench/, deploy scripts and users. New code imports `consumer.runtime.routing`."""

from consumer.runtime.routing import *  # noqa: F403
