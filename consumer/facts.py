"""Kept for one release: the old import path of `consumer.clinical.facts` (issue 16), for
tests, bench/, deploy scripts and users. New code imports `consumer.clinical.facts`."""

from consumer.clinical.facts import *  # noqa: F403
