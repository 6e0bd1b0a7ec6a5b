import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from services.common.pb.parley.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PlanRequest(_message.Message):
    __slots__ = ("product_key", "message", "session_id", "max_passages")
    PRODUCT_KEY_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_PASSAGES_FIELD_NUMBER: _ClassVar[int]
    product_key: str
    message: str
    session_id: str
    max_passages: int
    def __init__(self, product_key: _Optional[str] = ..., message: _Optional[str] = ..., session_id: _Optional[str] = ..., max_passages: _Optional[int] = ...) -> None: ...

class PlanResponse(_message.Message):
    __slots__ = ("product_key_id", "key_name", "knowledge_version", "strategy", "reasons", "passages", "faq_answer", "top_score", "instructions", "website", "scores", "fetch_url")
    class ScoresEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    PRODUCT_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_NAME_FIELD_NUMBER: _ClassVar[int]
    KNOWLEDGE_VERSION_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    PASSAGES_FIELD_NUMBER: _ClassVar[int]
    FAQ_ANSWER_FIELD_NUMBER: _ClassVar[int]
    TOP_SCORE_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTIONS_FIELD_NUMBER: _ClassVar[int]
    WEBSITE_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    FETCH_URL_FIELD_NUMBER: _ClassVar[int]
    product_key_id: str
    key_name: str
    knowledge_version: int
    strategy: _common_pb2.Strategy
    reasons: _containers.RepeatedScalarFieldContainer[str]
    passages: _containers.RepeatedCompositeFieldContainer[_common_pb2.Passage]
    faq_answer: str
    top_score: float
    instructions: str
    website: str
    scores: _containers.ScalarMap[str, float]
    fetch_url: str
    def __init__(self, product_key_id: _Optional[str] = ..., key_name: _Optional[str] = ..., knowledge_version: _Optional[int] = ..., strategy: _Optional[_Union[_common_pb2.Strategy, str]] = ..., reasons: _Optional[_Iterable[str]] = ..., passages: _Optional[_Iterable[_Union[_common_pb2.Passage, _Mapping]]] = ..., faq_answer: _Optional[str] = ..., top_score: _Optional[float] = ..., instructions: _Optional[str] = ..., website: _Optional[str] = ..., scores: _Optional[_Mapping[str, float]] = ..., fetch_url: _Optional[str] = ...) -> None: ...

class KeySettings(_message.Message):
    __slots__ = ("rate_limit_per_second", "rate_limit_burst", "allow_direct")
    RATE_LIMIT_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMIT_BURST_FIELD_NUMBER: _ClassVar[int]
    ALLOW_DIRECT_FIELD_NUMBER: _ClassVar[int]
    rate_limit_per_second: float
    rate_limit_burst: int
    allow_direct: bool
    def __init__(self, rate_limit_per_second: _Optional[float] = ..., rate_limit_burst: _Optional[int] = ..., allow_direct: _Optional[bool] = ...) -> None: ...

class ProductKeyInfo(_message.Message):
    __slots__ = ("id", "name", "knowledge_version", "created_at", "revoked", "website", "settings", "text_search_config", "rotated_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    KNOWLEDGE_VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    WEBSITE_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    TEXT_SEARCH_CONFIG_FIELD_NUMBER: _ClassVar[int]
    ROTATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    knowledge_version: int
    created_at: _timestamp_pb2.Timestamp
    revoked: bool
    website: str
    settings: KeySettings
    text_search_config: str
    rotated_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., knowledge_version: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revoked: _Optional[bool] = ..., website: _Optional[str] = ..., settings: _Optional[_Union[KeySettings, _Mapping]] = ..., text_search_config: _Optional[str] = ..., rotated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateProductKeyRequest(_message.Message):
    __slots__ = ("name", "id", "instructions", "website", "settings", "text_search_config")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTIONS_FIELD_NUMBER: _ClassVar[int]
    WEBSITE_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    TEXT_SEARCH_CONFIG_FIELD_NUMBER: _ClassVar[int]
    name: str
    id: str
    instructions: str
    website: str
    settings: KeySettings
    text_search_config: str
    def __init__(self, name: _Optional[str] = ..., id: _Optional[str] = ..., instructions: _Optional[str] = ..., website: _Optional[str] = ..., settings: _Optional[_Union[KeySettings, _Mapping]] = ..., text_search_config: _Optional[str] = ...) -> None: ...

class CreateProductKeyResponse(_message.Message):
    __slots__ = ("key", "product_key")
    KEY_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_KEY_FIELD_NUMBER: _ClassVar[int]
    key: ProductKeyInfo
    product_key: str
    def __init__(self, key: _Optional[_Union[ProductKeyInfo, _Mapping]] = ..., product_key: _Optional[str] = ...) -> None: ...

class ListProductKeysRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListProductKeysResponse(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[ProductKeyInfo]
    def __init__(self, keys: _Optional[_Iterable[_Union[ProductKeyInfo, _Mapping]]] = ...) -> None: ...

class RevokeProductKeyRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class RevokeProductKeyResponse(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: ProductKeyInfo
    def __init__(self, key: _Optional[_Union[ProductKeyInfo, _Mapping]] = ...) -> None: ...

class RotateProductKeyRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class RotateProductKeyResponse(_message.Message):
    __slots__ = ("key", "product_key")
    KEY_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_KEY_FIELD_NUMBER: _ClassVar[int]
    key: ProductKeyInfo
    product_key: str
    def __init__(self, key: _Optional[_Union[ProductKeyInfo, _Mapping]] = ..., product_key: _Optional[str] = ...) -> None: ...

class AddFaqRequest(_message.Message):
    __slots__ = ("product_key_id", "question", "answer")
    PRODUCT_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    product_key_id: str
    question: str
    answer: str
    def __init__(self, product_key_id: _Optional[str] = ..., question: _Optional[str] = ..., answer: _Optional[str] = ...) -> None: ...

class AddDocumentRequest(_message.Message):
    __slots__ = ("product_key_id", "title", "text", "url")
    PRODUCT_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    product_key_id: str
    title: str
    text: str
    url: str
    def __init__(self, product_key_id: _Optional[str] = ..., title: _Optional[str] = ..., text: _Optional[str] = ..., url: _Optional[str] = ...) -> None: ...

class AddKnowledgeResponse(_message.Message):
    __slots__ = ("chunk_ids", "knowledge_version")
    CHUNK_IDS_FIELD_NUMBER: _ClassVar[int]
    KNOWLEDGE_VERSION_FIELD_NUMBER: _ClassVar[int]
    chunk_ids: _containers.RepeatedScalarFieldContainer[str]
    knowledge_version: int
    def __init__(self, chunk_ids: _Optional[_Iterable[str]] = ..., knowledge_version: _Optional[int] = ...) -> None: ...

class DeleteKnowledgeRequest(_message.Message):
    __slots__ = ("product_key_id", "chunk_id", "document")
    PRODUCT_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    CHUNK_ID_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    product_key_id: str
    chunk_id: str
    document: str
    def __init__(self, product_key_id: _Optional[str] = ..., chunk_id: _Optional[str] = ..., document: _Optional[str] = ...) -> None: ...

class DeleteKnowledgeResponse(_message.Message):
    __slots__ = ("deleted", "knowledge_version")
    DELETED_FIELD_NUMBER: _ClassVar[int]
    KNOWLEDGE_VERSION_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    knowledge_version: int
    def __init__(self, deleted: _Optional[int] = ..., knowledge_version: _Optional[int] = ...) -> None: ...
