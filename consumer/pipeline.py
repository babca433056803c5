"""Kept for one release: the old import path of `consumer.clinical.pipeline` (issue 16), for
tests, bench/, deploy scripts and users. New code imports `consumer.clinical.pipeline`."""

from consumer.clinical.pipeline import *  # noqa: F403
