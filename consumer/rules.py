"""Kept for one release: the old import path of `consumer.clinical.rules` (issue 16), for
tests, bench/, deploy scripts and users. New code imports `consumer.clinical.rules`."""

from consumer.clinical.rules import *  # noqa: F403
