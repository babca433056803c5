"""Kept for one release: the old import path of `consumer.tools.evaluate` (issue 16), for
tests, bench/, deploy scripts and users. New code imports `consumer.tools.evaluate`."""

from consumer.tools.evaluate import *  # noqa: F403
