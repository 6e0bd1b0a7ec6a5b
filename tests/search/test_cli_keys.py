"""`parley keys rotate ID` reaches RotateProductKey."""

from __future__ import annotations

import asyncio

from services.cli import build_parser, cmd_keys
from services.common.pb.parley.v1 import search_pb2
from tests.conftest import RUN_ID


def test_rotate_is_a_keys_action():
    args = build_parser().parse_args(["keys", "rotate", "my-shop"])
    assert args.action == "rotate" and args.name == "my-shop"


async def test_cli_rotates_a_key(search, admin, settings, capsys):
    reply = await search.CreateProductKey(search_pb2.CreateProductKeyRequest(name="cli", id=f"t-{RUN_ID}-srch-cli"),
                                          metadata=admin, timeout=10)
    args = build_parser().parse_args(["keys", "rotate", reply.key.id])
    # cmd_keys runs its own event loop: give it a thread.
    await asyncio.to_thread(cmd_keys, args, settings)
    printed = capsys.readouterr().out
    assert "new product key" in printed and reply.product_key not in printed and "pk_" in printed
