"""Kept for one release: the old import path of `consumer.clinical.model` (issue 16), for
tests, bench/, deploy scripts and users. New code imports `consumer.clinical.model`."""

from consumer.clinical.model import *  # noqa: F403
