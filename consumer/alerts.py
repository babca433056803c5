"""Kept for one release: the old import path of `consumer.clinical.alerts` (issue 16), for
tests, bench/, deploy scripts and users. New code imports `consumer.clinical.alerts`."""

from consumer.clinical.alerts import *  # noqa: F403
