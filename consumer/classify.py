"""Kept for one release: the old import path of `consumer.clinical.classify` (issue 16), for
tests, bench/, deploy scripts and users. New code imports `consumer.clinical.classify`."""

from consumer.clinical.classify import *  # noqa: F403
