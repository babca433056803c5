"""Kept for one release: the old import path of `consumer.state.store` (issue 16), for
tests, bench/, deploy scripts and users. New code imports `consumer.state.store`."""

from consumer.state.store import *  # noqa: F403
