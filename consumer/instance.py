"""Kept for one release: the old import path of `consumer.runtime.instance` (issue 16), for
tests, bench/, deploy scripts and users. New code imports `consumer.runtime.instance`."""

from consumer.runtime.instance import *  # noqa: F403
