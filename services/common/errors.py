"""Domain errors that the gRPC layer maps to status codes; logic modules raise these, never grpc."""

from __future__ import annotations


class ParleyError(Exception):
    """An error with a gRPC status name and a message meant for the caller."""

    code = "INTERNAL"

    def __init__(self, message: str, *, trailers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.trailers = trailers or {}


class InvalidArgument(ParleyError):
    code = "INVALID_ARGUMENT"


class Unauthenticated(ParleyError):
    code = "UNAUTHENTICATED"


class PermissionDenied(ParleyError):
    code = "PERMISSION_DENIED"


class NotFound(ParleyError):
    code = "NOT_FOUND"


class AlreadyExists(ParleyError):
    code = "ALREADY_EXISTS"


class ResourceExhausted(ParleyError):
    code = "RESOURCE_EXHAUSTED"


class Unavailable(ParleyError):
    code = "UNAVAILABLE"


class DeadlineExceeded(ParleyError):
    code = "DEADLINE_EXCEEDED"
