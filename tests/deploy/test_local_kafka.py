"""The local stack's KRaft cluster id: the storage tool reads an id that starts with "-" as an option."""

from __future__ import annotations

import uuid

from deploy.local import kafka
from deploy.local.config import StackConfig


def _uuids(*first_bytes: int):
    made = iter([uuid.UUID(bytes=bytes([b]) + bytes(15)) for b in first_bytes])
    return lambda: next(made)


def test_a_cluster_id_never_starts_with_a_dash(monkeypatch):
    # 0xF8: the first six bits are 62, URL-safe base64's "-".
    monkeypatch.setattr(kafka.uuid, "uuid4", _uuids(0xF8, 0xF8, 0x10))
    cluster_id = kafka.new_cluster_id()
    assert not cluster_id.startswith("-") and cluster_id.startswith("E")


def test_a_stored_id_that_starts_with_a_dash_is_made_again(tmp_path, monkeypatch):
    cfg = StackConfig(state_dir=tmp_path, kafka_port=1, kafka_controller_port=2, pg_port=3, redis_port=4)
    cfg.kafka_dir.mkdir(parents=True)
    (cfg.kafka_dir / "cluster.id").write_text("-AAAAAAAAAAAAAAAAAAAAA\n")
    monkeypatch.setattr(kafka.uuid, "uuid4", _uuids(0x10))
    assert kafka._kafka_cluster_id(cfg).startswith("E")
    (cfg.kafka_dir / "cluster.id").write_text("kept-id\n")
    assert kafka._kafka_cluster_id(cfg) == "kept-id"
