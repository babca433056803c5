"""Kept for one release: the old import path of `consumer.tools.jsonout` (issue 16), for
tests, bench/, deploy scripts and users. New code imports `consumer.tools.jsonout`."""

from consumer.tools.jsonout import *  # noqa: F403
