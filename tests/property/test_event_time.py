"""Property tests of the future-dated event_time check (issue 15, item 4).

For any datetime (naive or in any zone, year 1 to 9999) as event_time and as the clock, and any
tolerance, `check_event_time` either accepts or raises InvalidEvent with reason
`event-time-in-future`, never anything else; and it refuses exactly the event times later
than clock + tolerance.
"""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from consumer.clinical.validate import check_event_time
from consumer.errors import InvalidEvent

# When a property fails, hypothesis's report hook imports mypy_extensions, which warns on import;
# with filterwarnings=error that turns a readable failure into a pytest INTERNALERROR.
pytestmark = pytest.mark.filterwarnings(
    "ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning"
)

ANY_DATETIME = st.datetimes(timezones=st.none() | st.timezones())
ANY_SKEW = st.timedeltas(min_value=dt.timedelta(0), max_value=dt.timedelta(days=3660))
# clocks and event times where `now + skew` is representable, for the exact oracle
PLAIN_UTC = st.datetimes(
    min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2200, 1, 1), timezones=st.just(dt.UTC)
)


def _refused(event_time: dt.datetime, now: dt.datetime, skew: dt.timedelta) -> bool:
    error = None
    try:
        check_event_time(event_time, now, skew)
    except InvalidEvent as exc:
        error = exc
    if error is None:
        return False
    assert (error.stage, error.reason) == ("validate", "event-time-in-future")
    return True


class TestEventTimeCheck:
    @settings(max_examples=500, deadline=None)
    @given(event_time=ANY_DATETIME, now=ANY_DATETIME, skew=ANY_SKEW)
    @example(  # a clock near the end of the range: `now + skew` would overflow
        event_time=dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC),
        now=dt.datetime(9999, 12, 31, tzinfo=dt.UTC),
        skew=dt.timedelta(days=2),
    )
    def test_never_raises_anything_else(
        self, event_time: dt.datetime, now: dt.datetime, skew: dt.timedelta
    ) -> None:
        _refused(event_time, now, skew)  # any other exception fails the property

    @settings(max_examples=300, deadline=None)
    @given(event_time=st.datetimes(timezones=st.just(dt.UTC)), now=PLAIN_UTC, skew=ANY_SKEW)
    def test_refuses_exactly_what_is_later_than_now_plus_skew(
        self, event_time: dt.datetime, now: dt.datetime, skew: dt.timedelta
    ) -> None:
        assert _refused(event_time, now, skew) is (event_time > now + skew)

    @settings(max_examples=200, deadline=None)
    @given(now=ANY_DATETIME, skew=ANY_SKEW)
    def test_the_ends_of_the_datetime_range(self, now: dt.datetime, skew: dt.timedelta) -> None:
        _refused(dt.datetime.max.replace(tzinfo=dt.UTC), now, skew)
        _refused(dt.datetime.min.replace(tzinfo=dt.UTC), now, skew)
        _refused(dt.datetime.max, now, skew)
