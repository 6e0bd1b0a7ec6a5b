"""Decoding Kafka values into events; a value that cannot be decoded becomes a dead letter."""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import DecodeError

from services.common.pb.parley.v1 import events_pb2


class InvalidEvent(ValueError):
    """The value is not a valid event; the reason goes into the dead letter's headers."""


@dataclass(frozen=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    reason: str


def decode_turn(value: bytes | None) -> events_pb2.ChatTurn:
    if not value:
        raise InvalidEvent("empty value")
    turn = events_pb2.ChatTurn()
    try:
        turn.ParseFromString(value)
    except DecodeError as exc:
        raise InvalidEvent(f"not a parley.v1.ChatTurn: {exc}") from None
    if not turn.event_id:
        raise InvalidEvent("ChatTurn without event_id")
    if not turn.product_key_id:
        raise InvalidEvent("ChatTurn without product_key_id")
    if not turn.HasField("occurred_at"):
        raise InvalidEvent("ChatTurn without occurred_at")
    return turn


def decode_feedback(value: bytes | None) -> events_pb2.Feedback:
    if not value:
        raise InvalidEvent("empty value")
    feedback = events_pb2.Feedback()
    try:
        feedback.ParseFromString(value)
    except DecodeError as exc:
        raise InvalidEvent(f"not a parley.v1.Feedback: {exc}") from None
    if not feedback.event_id or not feedback.product_key_id or not feedback.HasField("occurred_at"):
        raise InvalidEvent("Feedback without event_id, product_key_id or occurred_at")
    if feedback.rating not in (-1, 1):
        raise InvalidEvent(f"Feedback rating must be +1 or -1, not {feedback.rating}")
    return feedback
