"""Conversions between datetimes and protobuf Timestamps, used by every servicer."""

from __future__ import annotations

from datetime import datetime, timezone

from google.protobuf.timestamp_pb2 import Timestamp


def to_timestamp(value: datetime | None) -> Timestamp | None:
    """A Timestamp for a datetime; None stays None (the field is left unset)."""
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def from_timestamp(ts: Timestamp) -> datetime:
    """A Timestamp as an aware UTC datetime; ValueError for one outside what a Timestamp may hold
    (nanos out of 0..999,999,999, seconds before year 1 or after 9999): a producer's bug, not a time."""
    if not 0 <= ts.nanos <= 999_999_999:
        raise ValueError(f"nanos {ts.nanos} out of range")
    try:
        return ts.ToDatetime(tzinfo=timezone.utc)
    except (OverflowError, OSError) as exc:
        raise ValueError(f"seconds {ts.seconds} out of range ({exc})") from None
