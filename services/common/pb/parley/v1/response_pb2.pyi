from services.common.pb.parley.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ChatRequest(_message.Message):
    __slots__ = ("product_key", "session_id", "message", "no_cache")
    PRODUCT_KEY_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    NO_CACHE_FIELD_NUMBER: _ClassVar[int]
    product_key: str
    session_id: str
    message: str
    no_cache: bool
    def __init__(self, product_key: _Optional[str] = ..., session_id: _Optional[str] = ..., message: _Optional[str] = ..., no_cache: _Optional[bool] = ...) -> None: ...

class ChatResponse(_message.Message):
    __slots__ = ("request_id", "answer", "sources", "strategy", "model", "cache_status", "timings", "usage", "reasons")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CACHE_STATUS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    answer: str
    sources: _containers.RepeatedCompositeFieldContainer[_common_pb2.Passage]
    strategy: _common_pb2.Strategy
    model: str
    cache_status: _common_pb2.CacheStatus
    timings: _common_pb2.Timings
    usage: _common_pb2.TokenUsage
    reasons: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, request_id: _Optional[str] = ..., answer: _Optional[str] = ..., sources: _Optional[_Iterable[_Union[_common_pb2.Passage, _Mapping]]] = ..., strategy: _Optional[_Union[_common_pb2.Strategy, str]] = ..., model: _Optional[str] = ..., cache_status: _Optional[_Union[_common_pb2.CacheStatus, str]] = ..., timings: _Optional[_Union[_common_pb2.Timings, _Mapping]] = ..., usage: _Optional[_Union[_common_pb2.TokenUsage, _Mapping]] = ..., reasons: _Optional[_Iterable[str]] = ...) -> None: ...

class ChatChunk(_message.Message):
    __slots__ = ("delta", "final", "restart")
    DELTA_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    RESTART_FIELD_NUMBER: _ClassVar[int]
    delta: str
    final: ChatResponse
    restart: bool
    def __init__(self, delta: _Optional[str] = ..., final: _Optional[_Union[ChatResponse, _Mapping]] = ..., restart: _Optional[bool] = ...) -> None: ...

class FeedbackRequest(_message.Message):
    __slots__ = ("product_key", "request_id", "rating", "comment")
    PRODUCT_KEY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RATING_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    product_key: str
    request_id: str
    rating: int
    comment: str
    def __init__(self, product_key: _Optional[str] = ..., request_id: _Optional[str] = ..., rating: _Optional[int] = ..., comment: _Optional[str] = ...) -> None: ...

class FeedbackResponse(_message.Message):
    __slots__ = ("event_id",)
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    def __init__(self, event_id: _Optional[str] = ...) -> None: ...
