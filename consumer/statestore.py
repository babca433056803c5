"""Kept for one release: the old import path of `consumer.state.backends` (issue 16), for
tests, bench/, deploy scripts and users. New code imports `consumer.state.backends`."""

from consumer.state.backends import *  # noqa: F403
