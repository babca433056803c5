"""Kept for one release: the old import path of `consumer.tools.downstream` (issue 16), for
tests, bench/, deploy scripts and users. New code imports `consumer.tools.downstream`."""

from consumer.tools.downstream import *  # noqa: F403
