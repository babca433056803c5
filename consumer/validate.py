"""Kept for one release: the old import path of `consumer.clinical.validate` (issue 16), for
tests, bench/, deploy scripts and users. New code imports `consumer.clinical.validate`."""

from consumer.clinical.validate import *  # noqa: F403
