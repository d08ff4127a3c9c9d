"""Time as the services store it (UTC text that sorts in time order) and as they send it (protobuf Timestamp)."""

from __future__ import annotations

import datetime

from google.protobuf.timestamp_pb2 import Timestamp

_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def to_db(moment: datetime.datetime) -> str:
    """A timestamp as stored: UTC, ISO 8601 with microseconds and a Z, so text order is time order."""
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return moment.astimezone(datetime.UTC).strftime(_FORMAT)


def from_db(text: str) -> datetime.datetime:
    """The inverse of `to_db`."""
    return datetime.datetime.strptime(text, _FORMAT).replace(tzinfo=datetime.UTC)


def to_timestamp(text: str) -> Timestamp:
    """A stored timestamp as a protobuf Timestamp."""
    stamp = Timestamp()
    stamp.FromDatetime(from_db(text))
    return stamp
