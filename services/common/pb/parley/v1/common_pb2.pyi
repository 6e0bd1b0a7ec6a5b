from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class Strategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STRATEGY_UNSPECIFIED: _ClassVar[Strategy]
    STRATEGY_GREETING: _ClassVar[Strategy]
    STRATEGY_SMALLTALK: _ClassVar[Strategy]
    STRATEGY_FAQ: _ClassVar[Strategy]
    STRATEGY_KNOWLEDGE: _ClassVar[Strategy]
    STRATEGY_WEB: _ClassVar[Strategy]
    STRATEGY_DIRECT: _ClassVar[Strategy]
    STRATEGY_NO_ANSWER: _ClassVar[Strategy]

class CacheStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CACHE_STATUS_UNSPECIFIED: _ClassVar[CacheStatus]
    CACHE_STATUS_MISS: _ClassVar[CacheStatus]
    CACHE_STATUS_HIT: _ClassVar[CacheStatus]
    CACHE_STATUS_BYPASS: _ClassVar[CacheStatus]
    CACHE_STATUS_SHARED: _ClassVar[CacheStatus]
STRATEGY_UNSPECIFIED: Strategy
STRATEGY_GREETING: Strategy
STRATEGY_SMALLTALK: Strategy
STRATEGY_FAQ: Strategy
STRATEGY_KNOWLEDGE: Strategy
STRATEGY_WEB: Strategy
STRATEGY_DIRECT: Strategy
STRATEGY_NO_ANSWER: Strategy
CACHE_STATUS_UNSPECIFIED: CacheStatus
CACHE_STATUS_MISS: CacheStatus
CACHE_STATUS_HIT: CacheStatus
CACHE_STATUS_BYPASS: CacheStatus
CACHE_STATUS_SHARED: CacheStatus

class Passage(_message.Message):
    __slots__ = ("id", "kind", "title", "text", "url", "score")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: str
    title: str
    text: str
    url: str
    score: float
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[str] = ..., title: _Optional[str] = ..., text: _Optional[str] = ..., url: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("search_ms", "ttft_ms", "llm_ms", "total_ms")
    SEARCH_MS_FIELD_NUMBER: _ClassVar[int]
    TTFT_MS_FIELD_NUMBER: _ClassVar[int]
    LLM_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    search_ms: float
    ttft_ms: float
    llm_ms: float
    total_ms: float
    def __init__(self, search_ms: _Optional[float] = ..., ttft_ms: _Optional[float] = ..., llm_ms: _Optional[float] = ..., total_ms: _Optional[float] = ...) -> None: ...

class TokenUsage(_message.Message):
    __slots__ = ("prompt_tokens", "completion_tokens")
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    completion_tokens: int
    def __init__(self, prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ...) -> None: ...
