"""The runtime's size check (consumer/runtime/kafka/quirks.fits) settles most records by a bound
instead of kafka-python's pure-Python estimate: it must answer exactly as the estimate does, for
any key, value and headers, near the limit and far from it."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.runtime.kafka import DefaultRecordBatchBuilder
from consumer.runtime.kafka.quirks import fits

_bytes = st.one_of(st.none(), st.binary(max_size=600))
_headers = st.lists(st.tuples(st.text(max_size=40), _bytes), max_size=6)


def _estimate_fits(
    key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]], limit: int
) -> bool:
    return int(DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers)) <= limit


@settings(max_examples=400)
@given(key=_bytes, value=_bytes, headers=_headers, slack=st.integers(-400, 400))
def test_fits_agrees_with_kafka_python_near_the_limit(
    key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]], slack: int
) -> None:
    # a limit around the record's own estimate: both sides of the boundary, and exactly on it
    estimate = int(DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers))
    limit = max(0, estimate + slack)
    assert fits(key, value, headers, limit) == _estimate_fits(key, value, headers, limit)


@given(key=_bytes, value=_bytes, headers=_headers, limit=st.integers(0, 5000))
def test_fits_agrees_with_kafka_python_anywhere(
    key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]], limit: int
) -> None:
    assert fits(key, value, headers, limit) == _estimate_fits(key, value, headers, limit)


def test_large_varints_and_multibyte_header_names() -> None:
    # lengths whose varints take 3 bytes, a header name of 4-byte UTF-8 characters
    value = b"v" * 70_000
    headers = [("\N{GRINNING FACE}" * 50, b"h" * 20_000)]
    estimate = int(DefaultRecordBatchBuilder.estimate_size_in_bytes(b"k", value, headers))
    for limit in (estimate - 1, estimate, estimate + 1):
        assert fits(b"k", value, headers, limit) == (estimate <= limit)
