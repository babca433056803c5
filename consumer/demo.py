"""Kept for one release: the old import path of `consumer.tools.demo` (issue 16), for
tests, bench/, deploy scripts and users. New code imports `consumer.tools.demo`."""

from consumer.tools.demo import *  # noqa: F403
