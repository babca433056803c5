"""Kept for one release: the old import path of `consumer.tools.synthetic` (issue 16), for
tests, bench/, deploy scripts and users. New code imports `consumer.tools.synthetic`."""

from consumer.tools.synthetic import *  # noqa: F403
