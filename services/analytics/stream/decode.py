"""Decoding Kafka values into events; a value that cannot be decoded becomes a dead letter."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from google.protobuf.message import DecodeError, Message
from google.protobuf.unknown_fields import UnknownFieldSet

from services.common.pb.parley.v1 import common_pb2, events_pb2


# The range of a google.protobuf.Timestamp (0001-01-01 to 9999-12-31 UTC): beyond it no datetime holds
# the time, and the event could be neither stored nor counted in a minute.
MIN_SECONDS, MAX_SECONDS = -62_135_596_800, 253_402_300_799
MAX_NANOS = 999_999_999
MAX_FLOAT = 1.7976931348623157e308  # the largest finite double: `0.0 <= x <= MAX_FLOAT` is False for inf and NaN
# How far ahead of the time the broker took its record (its LogAppendTime; on a topic that keeps
# CreateTime, the worker's clock) an event's occurred_at may be (the default of the setting
# stream_max_ahead_seconds): an event stamped later is dead-lettered. Stored, it would be counted in a
# minute no query reads yet (a stamp a year ahead stays there, unseen) and that minute's summary
# published before the minute began. Ten minutes are far more than the clocks of hosts kept by NTP
# differ, and a turn is stamped before it is sent.
MAX_AHEAD_SECONDS = 600.0


# The event-type header of each topic's records, as producers set it (services.common.kafka.event_headers):
# the message's full protobuf name.
TURN_TYPE = events_pb2.ChatTurn.DESCRIPTOR.full_name.encode()
FEEDBACK_TYPE = events_pb2.Feedback.DESCRIPTOR.full_name.encode()
EVENT_TYPE_HEADER = "event-type"
# Characters of a header's value quoted in a reason (the reason is cut at 1,000).
QUOTED_CHARS = 200


class InvalidEvent(ValueError):
    """The value is not a valid event; the reason goes into the dead letter's headers."""


def wrong_event_type(event_type: bytes | None, expected: bytes) -> str:
    """Why a record whose event-type header names another type than `expected` (the one its topic
    carries) is refused, or "" when the header names that type or is absent (then the value decides).
    Protobuf decodes nearly any message as any other: a KnowledgeUpdated on the turns topic read as a
    ChatTurn was stored and counted, with its reason as request id."""
    if event_type is None or event_type == expected:
        return ""
    named = event_type.decode("utf-8", "replace")[:QUOTED_CHARS]
    return f"event-type header {named!r}: not a {expected.decode()}, the type of this topic's events"


def _foreign(message: Message) -> str:
    """A hint for a reason, when the value holds fields `message`'s type has not (numbers it does not
    have, or of another wire type): likely an event of another type, sent without its event-type header."""
    numbers = sorted({f.field_number for f in UnknownFieldSet(message)})
    if not numbers:
        return ""
    shown = ", ".join(map(str, numbers[:10])) + (", ..." if len(numbers) > 10 else "")
    return (f" (the value holds fields a {message.DESCRIPTOR.full_name} has not, or not of their wire type: "
            f"numbers {shown}; another event type?)")


@dataclass(frozen=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    reason: str


def decode_turn(value: bytes | None, latest: float = math.inf) -> events_pb2.ChatTurn:
    """`latest`: the latest occurred_at accepted, in seconds since the epoch (the record's LogAppendTime,
    or the consumer's clock read once per slice of records, plus stream_max_ahead_seconds)."""
    if not value:
        raise InvalidEvent("empty value")
    turn = events_pb2.ChatTurn()
    try:
        turn.ParseFromString(value)
    except DecodeError as exc:
        raise InvalidEvent(f"not a parley.v1.ChatTurn: {exc}") from None
    if not turn.event_id:
        raise InvalidEvent("ChatTurn without event_id" + _foreign(turn))
    if not turn.product_key_id:
        raise InvalidEvent("ChatTurn without product_key_id" + _foreign(turn))
    if not turn.HasField("occurred_at"):
        raise InvalidEvent("ChatTurn without occurred_at" + _foreign(turn))
    # Every turn the response service reports has its request id, and a strategy unless it failed (a
    # turn that fails before its plan has none, and its error code): a value without them is not a turn,
    # whatever protobuf made of it.
    if not turn.request_id:
        raise InvalidEvent("ChatTurn without request_id" + _foreign(turn))
    if turn.strategy == common_pb2.STRATEGY_UNSPECIFIED and not turn.error_code:
        raise InvalidEvent("ChatTurn with strategy UNSPECIFIED and no error_code (an answered turn has a strategy)"
                           + _foreign(turn))
    if turn.occurred_at.seconds > latest:
        raise InvalidEvent(f"ChatTurn with {_ahead(turn.occurred_at)}")
    return turn


def _bad_time(ts) -> str:
    """What is wrong with a Timestamp, or "" when it is valid."""
    if not MIN_SECONDS <= ts.seconds <= MAX_SECONDS:
        return f"occurred_at.seconds {ts.seconds} outside years 1 to 9999"
    if not 0 <= ts.nanos <= MAX_NANOS:
        return f"occurred_at.nanos {ts.nanos} outside [0, {MAX_NANOS}]"
    return ""


def _ahead(ts) -> str:
    """Why a Timestamp later than the latest accepted is refused. (The other checks of a turn's time are
    made with its numbers, in rows.turn_rows.)"""
    if problem := _bad_time(ts):
        return problem
    stamp = datetime.fromtimestamp(ts.seconds, timezone.utc).isoformat()
    return (f"occurred_at {stamp} {ts.seconds - time.time():.0f} s ahead of the worker's clock "
            f"and more than PARLEY_STREAM_MAX_AHEAD_SECONDS ahead of the time the broker took it")


def invalid_numbers(turn: events_pb2.ChatTurn) -> str:
    """The fields of a turn that no metric may hold, named with their values: a time no Timestamp holds,
    a negative or non-finite timing or cost, negative tokens. The check itself is made where the rows
    are built (rows.turn_rows), which reads these fields anyway; this only says why."""
    bad = [problem] if (problem := _bad_time(turn.occurred_at)) else []
    tm, usage = turn.timings, turn.usage
    for name, value in (("timings.total_ms", tm.total_ms), ("timings.ttft_ms", tm.ttft_ms),
                        ("timings.search_ms", tm.search_ms), ("timings.llm_ms", tm.llm_ms),
                        ("cost_usd", turn.cost_usd)):
        if not (value >= 0.0 and math.isfinite(value)):
            bad.append(f"{name} {value!r} (not a finite number >= 0)")
    for name, value in (("usage.prompt_tokens", usage.prompt_tokens),
                        ("usage.completion_tokens", usage.completion_tokens)):
        if value < 0:
            bad.append(f"{name} {value} (negative)")
    return ", ".join(bad)


def decode_feedback(value: bytes | None, latest: float = math.inf) -> events_pb2.Feedback:
    """`latest`: as in decode_turn."""
    if not value:
        raise InvalidEvent("empty value")
    feedback = events_pb2.Feedback()
    try:
        feedback.ParseFromString(value)
    except DecodeError as exc:
        raise InvalidEvent(f"not a parley.v1.Feedback: {exc}") from None
    if not feedback.event_id or not feedback.product_key_id or not feedback.HasField("occurred_at"):
        raise InvalidEvent("Feedback without event_id, product_key_id or occurred_at" + _foreign(feedback))
    if problem := _bad_time(feedback.occurred_at):
        raise InvalidEvent(f"Feedback with {problem}")
    if feedback.occurred_at.seconds > latest:
        raise InvalidEvent(f"Feedback with {_ahead(feedback.occurred_at)}")
    if not feedback.request_id:
        raise InvalidEvent("Feedback without request_id (the turn it rates)" + _foreign(feedback))
    if feedback.rating not in (-1, 1):
        raise InvalidEvent(f"Feedback rating must be +1 or -1, not {feedback.rating}" + _foreign(feedback))
    return feedback
