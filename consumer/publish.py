"""Kept for one release: the old import path of `consumer.tools.publish` (issue 16), for
tests, bench/, deploy scripts and users. New code imports `consumer.tools.publish`."""

from consumer.tools.publish import *  # noqa: F403
