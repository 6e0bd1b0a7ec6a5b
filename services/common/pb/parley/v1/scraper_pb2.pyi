import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StartCrawlRequest(_message.Message):
    __slots__ = ("product_key_id", "seed_urls", "sitemap_url", "max_pages", "max_depth", "include", "exclude")
    PRODUCT_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SEED_URLS_FIELD_NUMBER: _ClassVar[int]
    SITEMAP_URL_FIELD_NUMBER: _ClassVar[int]
    MAX_PAGES_FIELD_NUMBER: _ClassVar[int]
    MAX_DEPTH_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_FIELD_NUMBER: _ClassVar[int]
    product_key_id: str
    seed_urls: _containers.RepeatedScalarFieldContainer[str]
    sitemap_url: str
    max_pages: int
    max_depth: int
    include: _containers.RepeatedScalarFieldContainer[str]
    exclude: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, product_key_id: _Optional[str] = ..., seed_urls: _Optional[_Iterable[str]] = ..., sitemap_url: _Optional[str] = ..., max_pages: _Optional[int] = ..., max_depth: _Optional[int] = ..., include: _Optional[_Iterable[str]] = ..., exclude: _Optional[_Iterable[str]] = ...) -> None: ...

class StartCrawlResponse(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class GetCrawlRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class CrawlStatus(_message.Message):
    __slots__ = ("job_id", "state", "pages_seen", "pages_fetched", "pages_unchanged", "pages_failed", "pages_robots_skipped", "chunks_written", "started_at", "finished_at", "error", "pages_skipped", "pages_removed", "chunks_deleted", "product_key_id")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PAGES_SEEN_FIELD_NUMBER: _ClassVar[int]
    PAGES_FETCHED_FIELD_NUMBER: _ClassVar[int]
    PAGES_UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    PAGES_FAILED_FIELD_NUMBER: _ClassVar[int]
    PAGES_ROBOTS_SKIPPED_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PAGES_SKIPPED_FIELD_NUMBER: _ClassVar[int]
    PAGES_REMOVED_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_DELETED_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    state: str
    pages_seen: int
    pages_fetched: int
    pages_unchanged: int
    pages_failed: int
    pages_robots_skipped: int
    chunks_written: int
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    error: str
    pages_skipped: int
    pages_removed: int
    chunks_deleted: int
    product_key_id: str
    def __init__(self, job_id: _Optional[str] = ..., state: _Optional[str] = ..., pages_seen: _Optional[int] = ..., pages_fetched: _Optional[int] = ..., pages_unchanged: _Optional[int] = ..., pages_failed: _Optional[int] = ..., pages_robots_skipped: _Optional[int] = ..., chunks_written: _Optional[int] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., error: _Optional[str] = ..., pages_skipped: _Optional[int] = ..., pages_removed: _Optional[int] = ..., chunks_deleted: _Optional[int] = ..., product_key_id: _Optional[str] = ...) -> None: ...

class FetchRequest(_message.Message):
    __slots__ = ("url", "product_key_id", "product_key")
    URL_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_KEY_FIELD_NUMBER: _ClassVar[int]
    url: str
    product_key_id: str
    product_key: str
    def __init__(self, url: _Optional[str] = ..., product_key_id: _Optional[str] = ..., product_key: _Optional[str] = ...) -> None: ...

class FetchResponse(_message.Message):
    __slots__ = ("url", "title", "text", "cached", "status")
    URL_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    url: str
    title: str
    text: str
    cached: bool
    status: int
    def __init__(self, url: _Optional[str] = ..., title: _Optional[str] = ..., text: _Optional[str] = ..., cached: _Optional[bool] = ..., status: _Optional[int] = ...) -> None: ...
