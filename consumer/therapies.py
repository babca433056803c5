"""Kept for one release: the old import path of `consumer.clinical.therapies` (issue 16), for
tests, bench/, deploy scripts and users. New code imports `consumer.clinical.therapies`."""

from consumer.clinical.therapies import *  # noqa: F403
