"""The admin token: one header, one check, the same answer in every service.

A call without the header, or with a token that is not the admin's (empty, guessed, a tenant's
secret), is UNAUTHENTICATED: the caller cannot be identified as the admin (gRPC's status guide keeps
PERMISSION_DENIED for an identified caller that may not do what it asks, e.g. a tenant reading another
tenant's data). The comparison takes the same time wherever the tokens differ."""

from __future__ import annotations

import hmac

import grpc

from services.common.errors import Unauthenticated

ADMIN_HEADER = "x-parley-admin-token"


def admin_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """The metadata of a call made with the admin token (the CLI's admin calls, the response service's Plans)."""
    return ((ADMIN_HEADER, token),)


def admin_token(context: grpc.aio.ServicerContext) -> str | None:
    """The admin header's value as sent, or None when the call has none."""
    return dict(context.invocation_metadata() or ()).get(ADMIN_HEADER)


def check_admin(token: str | None, expected: str) -> None:
    if token is None:
        raise Unauthenticated(f"this call needs the admin token in the {ADMIN_HEADER} metadata header")
    # An empty token is never the admin's, also when the configured one is empty (unset in a deployment).
    if not token or not hmac.compare_digest(token.encode(), expected.encode()):
        raise Unauthenticated(f"the admin token in {ADMIN_HEADER} is not valid")
