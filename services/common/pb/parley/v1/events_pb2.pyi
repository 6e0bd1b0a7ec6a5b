import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from services.common.pb.parley.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ChatTurn(_message.Message):
    __slots__ = ("event_id", "occurred_at", "product_key_id", "session_id", "request_id", "message", "answer", "strategy", "model", "cache_status", "timings", "usage", "cost_usd", "source_ids", "error_code", "trace_id")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CACHE_STATUS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    SOURCE_IDS_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    occurred_at: _timestamp_pb2.Timestamp
    product_key_id: str
    session_id: str
    request_id: str
    message: str
    answer: str
    strategy: _common_pb2.Strategy
    model: str
    cache_status: _common_pb2.CacheStatus
    timings: _common_pb2.Timings
    usage: _common_pb2.TokenUsage
    cost_usd: float
    source_ids: _containers.RepeatedScalarFieldContainer[str]
    error_code: str
    trace_id: str
    def __init__(self, event_id: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., product_key_id: _Optional[str] = ..., session_id: _Optional[str] = ..., request_id: _Optional[str] = ..., message: _Optional[str] = ..., answer: _Optional[str] = ..., strategy: _Optional[_Union[_common_pb2.Strategy, str]] = ..., model: _Optional[str] = ..., cache_status: _Optional[_Union[_common_pb2.CacheStatus, str]] = ..., timings: _Optional[_Union[_common_pb2.Timings, _Mapping]] = ..., usage: _Optional[_Union[_common_pb2.TokenUsage, _Mapping]] = ..., cost_usd: _Optional[float] = ..., source_ids: _Optional[_Iterable[str]] = ..., error_code: _Optional[str] = ..., trace_id: _Optional[str] = ...) -> None: ...

class Feedback(_message.Message):
    __slots__ = ("event_id", "occurred_at", "product_key_id", "request_id", "rating", "comment", "message")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RATING_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    occurred_at: _timestamp_pb2.Timestamp
    product_key_id: str
    request_id: str
    rating: int
    comment: str
    message: str
    def __init__(self, event_id: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., product_key_id: _Optional[str] = ..., request_id: _Optional[str] = ..., rating: _Optional[int] = ..., comment: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class CrawlRequested(_message.Message):
    __slots__ = ("event_id", "occurred_at", "job_id", "product_key_id", "seed_urls", "sitemap_url", "max_pages", "max_depth", "include", "exclude")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SEED_URLS_FIELD_NUMBER: _ClassVar[int]
    SITEMAP_URL_FIELD_NUMBER: _ClassVar[int]
    MAX_PAGES_FIELD_NUMBER: _ClassVar[int]
    MAX_DEPTH_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    occurred_at: _timestamp_pb2.Timestamp
    job_id: str
    product_key_id: str
    seed_urls: _containers.RepeatedScalarFieldContainer[str]
    sitemap_url: str
    max_pages: int
    max_depth: int
    include: _containers.RepeatedScalarFieldContainer[str]
    exclude: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, event_id: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., job_id: _Optional[str] = ..., product_key_id: _Optional[str] = ..., seed_urls: _Optional[_Iterable[str]] = ..., sitemap_url: _Optional[str] = ..., max_pages: _Optional[int] = ..., max_depth: _Optional[int] = ..., include: _Optional[_Iterable[str]] = ..., exclude: _Optional[_Iterable[str]] = ...) -> None: ...

class KnowledgeUpdated(_message.Message):
    __slots__ = ("event_id", "occurred_at", "product_key_id", "knowledge_version", "reason", "url")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    KNOWLEDGE_VERSION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    occurred_at: _timestamp_pb2.Timestamp
    product_key_id: str
    knowledge_version: int
    reason: str
    url: str
    def __init__(self, event_id: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., product_key_id: _Optional[str] = ..., knowledge_version: _Optional[int] = ..., reason: _Optional[str] = ..., url: _Optional[str] = ...) -> None: ...

class KnowledgePage(_message.Message):
    __slots__ = ("event_id", "occurred_at", "product_key_id", "document", "old_document", "title", "chunks", "removed", "job_id", "url")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    OLD_DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    occurred_at: _timestamp_pb2.Timestamp
    product_key_id: str
    document: str
    old_document: str
    title: str
    chunks: _containers.RepeatedScalarFieldContainer[str]
    removed: bool
    job_id: str
    url: str
    def __init__(self, event_id: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., product_key_id: _Optional[str] = ..., document: _Optional[str] = ..., old_document: _Optional[str] = ..., title: _Optional[str] = ..., chunks: _Optional[_Iterable[str]] = ..., removed: _Optional[bool] = ..., job_id: _Optional[str] = ..., url: _Optional[str] = ...) -> None: ...
