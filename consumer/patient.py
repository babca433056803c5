"""Kept for one release: the old import path of `consumer.clinical.patient` (issue 16), for
tests, bench/, deploy scripts and users. New code imports `consumer.clinical.patient`."""

from consumer.clinical.patient import *  # noqa: F403
