import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Granularity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GRANULARITY_UNSPECIFIED: _ClassVar[Granularity]
    GRANULARITY_MINUTE: _ClassVar[Granularity]
    GRANULARITY_HOUR: _ClassVar[Granularity]
    GRANULARITY_DAY: _ClassVar[Granularity]

class GroupBy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GROUP_BY_NONE: _ClassVar[GroupBy]
    GROUP_BY_STRATEGY: _ClassVar[GroupBy]
    GROUP_BY_MODEL: _ClassVar[GroupBy]
GRANULARITY_UNSPECIFIED: Granularity
GRANULARITY_MINUTE: Granularity
GRANULARITY_HOUR: Granularity
GRANULARITY_DAY: Granularity
GROUP_BY_NONE: GroupBy
GROUP_BY_STRATEGY: GroupBy
GROUP_BY_MODEL: GroupBy

class GetMetricsRequest(_message.Message):
    __slots__ = ("product_key_id", "start", "end", "granularity", "group_by", "product_key")
    PRODUCT_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    GRANULARITY_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_KEY_FIELD_NUMBER: _ClassVar[int]
    product_key_id: str
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    granularity: Granularity
    group_by: GroupBy
    product_key: str
    def __init__(self, product_key_id: _Optional[str] = ..., start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., granularity: _Optional[_Union[Granularity, str]] = ..., group_by: _Optional[_Union[GroupBy, str]] = ..., product_key: _Optional[str] = ...) -> None: ...

class Percentiles(_message.Message):
    __slots__ = ("p50", "p95", "p99")
    P50_FIELD_NUMBER: _ClassVar[int]
    P95_FIELD_NUMBER: _ClassVar[int]
    P99_FIELD_NUMBER: _ClassVar[int]
    p50: float
    p95: float
    p99: float
    def __init__(self, p50: _Optional[float] = ..., p95: _Optional[float] = ..., p99: _Optional[float] = ...) -> None: ...

class MetricsPoint(_message.Message):
    __slots__ = ("bucket_start", "group", "turns", "cache_hits", "errors", "no_answers", "feedback_up", "feedback_down", "tokens_in", "tokens_out", "cache_hit_rate", "error_rate", "total_ms", "ttft_ms", "search_ms", "llm_ms")
    BUCKET_START_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    TURNS_FIELD_NUMBER: _ClassVar[int]
    CACHE_HITS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    NO_ANSWERS_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_UP_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_DOWN_FIELD_NUMBER: _ClassVar[int]
    TOKENS_IN_FIELD_NUMBER: _ClassVar[int]
    TOKENS_OUT_FIELD_NUMBER: _ClassVar[int]
    CACHE_HIT_RATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    TTFT_MS_FIELD_NUMBER: _ClassVar[int]
    SEARCH_MS_FIELD_NUMBER: _ClassVar[int]
    LLM_MS_FIELD_NUMBER: _ClassVar[int]
    bucket_start: _timestamp_pb2.Timestamp
    group: str
    turns: int
    cache_hits: int
    errors: int
    no_answers: int
    feedback_up: int
    feedback_down: int
    tokens_in: int
    tokens_out: int
    cache_hit_rate: float
    error_rate: float
    total_ms: Percentiles
    ttft_ms: Percentiles
    search_ms: Percentiles
    llm_ms: Percentiles
    def __init__(self, bucket_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., group: _Optional[str] = ..., turns: _Optional[int] = ..., cache_hits: _Optional[int] = ..., errors: _Optional[int] = ..., no_answers: _Optional[int] = ..., feedback_up: _Optional[int] = ..., feedback_down: _Optional[int] = ..., tokens_in: _Optional[int] = ..., tokens_out: _Optional[int] = ..., cache_hit_rate: _Optional[float] = ..., error_rate: _Optional[float] = ..., total_ms: _Optional[_Union[Percentiles, _Mapping]] = ..., ttft_ms: _Optional[_Union[Percentiles, _Mapping]] = ..., search_ms: _Optional[_Union[Percentiles, _Mapping]] = ..., llm_ms: _Optional[_Union[Percentiles, _Mapping]] = ...) -> None: ...

class GetMetricsResponse(_message.Message):
    __slots__ = ("points", "total")
    POINTS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    points: _containers.RepeatedCompositeFieldContainer[MetricsPoint]
    total: MetricsPoint
    def __init__(self, points: _Optional[_Iterable[_Union[MetricsPoint, _Mapping]]] = ..., total: _Optional[_Union[MetricsPoint, _Mapping]] = ...) -> None: ...

class StreamMetricsRequest(_message.Message):
    __slots__ = ("product_key_id", "interval_seconds", "product_key")
    PRODUCT_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_KEY_FIELD_NUMBER: _ClassVar[int]
    product_key_id: str
    interval_seconds: int
    product_key: str
    def __init__(self, product_key_id: _Optional[str] = ..., interval_seconds: _Optional[int] = ..., product_key: _Optional[str] = ...) -> None: ...

class TopQuestionsRequest(_message.Message):
    __slots__ = ("product_key_id", "start", "end", "limit", "product_key")
    PRODUCT_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_KEY_FIELD_NUMBER: _ClassVar[int]
    product_key_id: str
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    limit: int
    product_key: str
    def __init__(self, product_key_id: _Optional[str] = ..., start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., limit: _Optional[int] = ..., product_key: _Optional[str] = ...) -> None: ...

class QuestionCount(_message.Message):
    __slots__ = ("question", "count", "no_answers", "feedback_down")
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    NO_ANSWERS_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_DOWN_FIELD_NUMBER: _ClassVar[int]
    question: str
    count: int
    no_answers: int
    feedback_down: int
    def __init__(self, question: _Optional[str] = ..., count: _Optional[int] = ..., no_answers: _Optional[int] = ..., feedback_down: _Optional[int] = ...) -> None: ...

class TopQuestionsResponse(_message.Message):
    __slots__ = ("questions",)
    QUESTIONS_FIELD_NUMBER: _ClassVar[int]
    questions: _containers.RepeatedCompositeFieldContainer[QuestionCount]
    def __init__(self, questions: _Optional[_Iterable[_Union[QuestionCount, _Mapping]]] = ...) -> None: ...
