"""The event outbox against the real Kafka: kept on disk while the broker is away (across a
restart of the process), delivered in order once it is back, bounded, one process per file."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client import REGISTRY

from bench.harness import free_port
from services.common.kafka import EventProducer, ensure_topics
from services.common.outbox import DELIVERY_LINGER_SECONDS, Outbox
from services.common.pb.parley.v1 import events_pb2
from tests.conftest import RUN_ID

UNREACHABLE = "127.0.0.1:9"  # discard port: nothing listens, connections are refused


def _turn(n: int) -> events_pb2.ChatTurn:
    return events_pb2.ChatTurn(event_id=f"{RUN_ID}-{n}", product_key_id="t-outbox", request_id=f"r{n}",
                               message=f"question {n}")


async def _read(bootstrap: str, topic: str, want: int, timeout: float = 30.0) -> list[events_pb2.ChatTurn]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    seen: list[events_pb2.ChatTurn] = []
    try:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while len(seen) < want and loop.time() < end:
            batch = await consumer.getmany(timeout_ms=500)
            for messages in batch.values():
                seen += [events_pb2.ChatTurn.FromString(m.value) for m in messages]
    finally:
        await consumer.stop()
    return seen


async def test_events_wait_on_disk_through_a_restart_and_arrive_in_order(stack, tmp_path: Path):
    topic = f"parley.test.outbox.{RUN_ID}.{uuid.uuid4().hex[:6]}"
    await ensure_topics(stack.kafka_bootstrap, [topic], partitions=1)
    path = tmp_path / "response-1.sqlite"

    away = Outbox(path, EventProducer(UNREACHABLE), name="test-away", round_timeout_seconds=2)
    away.start()
    for n in range(20):
        assert await away.publish(topic, "t-outbox", _turn(n)) is True  # no broker: the answer does not wait
    await asyncio.sleep(1.0)
    assert away.pending == 20 and away.last_error  # tried, refused, kept
    await away.stop(drain_seconds=0.2)             # the replica restarts while the broker is away

    back = Outbox(path, EventProducer(stack.kafka_bootstrap), name="test-back")
    back.start()
    assert back.pending == 20
    await back.publish(topic, "t-outbox", _turn(20))
    for _ in range(300):
        if back.pending == 0:
            break
        await asyncio.sleep(0.1)
    await back.stop()
    assert back.pending == 0
    seen = await _read(stack.kafka_bootstrap, topic, 21)
    assert [e.event_id for e in seen] == [f"{RUN_ID}-{n}" for n in range(21)]


async def test_a_full_outbox_refuses_counts_and_reports_new_events(tmp_path: Path):
    outbox = Outbox(tmp_path / "full.sqlite", EventProducer(UNREACHABLE), name="test-full", max_events=3)
    outbox.open()
    before = REGISTRY.get_sample_value("parley_outbox_dropped_total", {"outbox": "test-full", "topic": "t"}) or 0.0
    results = [await outbox.publish("t", "k", _turn(n)) for n in range(5)]
    assert results == [True, True, True, False, False]
    assert outbox.pending == 3 and outbox.dropped == 2
    assert REGISTRY.get_sample_value("parley_outbox_dropped_total", {"outbox": "test-full", "topic": "t"}) == before + 2
    with pytest.raises(Exception, match="outbox full"):
        await outbox.ping()
    outbox.close()


async def test_the_outbox_is_full_at_its_bytes_too_and_its_bytes_are_counted_again_after_a_restart(tmp_path: Path):
    """max_bytes keeps the file within its volume (a Kubernetes emptyDir's sizeLimit: a pod past it
    is evicted with every undelivered event)."""
    size = len(_turn(0).SerializeToString())
    outbox = Outbox(tmp_path / "bytes.sqlite", EventProducer(UNREACHABLE), name="test-bytes", max_bytes=10 * size)
    outbox.open()
    results = [await outbox.publish("t", "k", _turn(n)) for n in range(12)]
    kept = results.count(True)
    assert 1 <= kept < 10 and results == [True] * kept + [False] * (12 - kept)   # headers and keys count too
    with pytest.raises(Exception, match="outbox full"):
        await outbox.ping()
    outbox.close()
    again = Outbox(tmp_path / "bytes.sqlite", EventProducer(UNREACHABLE), name="test-bytes", max_bytes=10 * size)
    again.open()
    assert again.pending == kept and await again.publish("t", "k", _turn(99)) is False
    again.close()


async def test_two_processes_cannot_share_one_outbox_file(tmp_path: Path):
    first = Outbox(tmp_path / "shared.sqlite", EventProducer(UNREACHABLE), name="test-shared")
    first.open()
    second = Outbox(tmp_path / "shared.sqlite", EventProducer(UNREACHABLE), name="test-shared")
    with pytest.raises(RuntimeError, match="used by another process"):
        second.open()
    first.close()


async def test_concurrent_events_are_written_together_in_order_and_a_cancelled_caller_loses_none(tmp_path: Path):
    outbox = Outbox(tmp_path / "group.sqlite", EventProducer(UNREACHABLE), name="test-group", max_events=100)
    outbox.open()
    statements: list[str] = []
    outbox._db.set_trace_callback(statements.append)
    publishes = [asyncio.ensure_future(outbox.publish("t", "k", _turn(n))) for n in range(10)]
    await asyncio.sleep(0)  # each has queued its row; the write is the loop's next step
    publishes[3].cancel()  # a turn whose client went away while its event was being written
    results = await asyncio.gather(*publishes, return_exceptions=True)
    assert isinstance(results[3], asyncio.CancelledError)
    assert [r for i, r in enumerate(results) if i != 3] == [True] * 9
    assert statements.count("COMMIT") == 1  # one transaction for the ten
    stored = [events_pb2.ChatTurn.FromString(v).event_id
              for (v,) in outbox._db.execute("SELECT value FROM outbox ORDER BY seq")]
    assert stored == [f"{RUN_ID}-{n}" for n in range(10)] and outbox.pending == 10
    assert await outbox.publish("t", "k", _turn(10)) is True
    assert statements.count("COMMIT") == 2 and outbox.pending == 11
    outbox.close()


async def test_a_full_outbox_counts_the_events_still_being_written(tmp_path: Path):
    outbox = Outbox(tmp_path / "bound.sqlite", EventProducer(UNREACHABLE), name="test-bound", max_events=4)
    outbox.open()
    results = await asyncio.gather(*(outbox.publish("t", "k", _turn(n)) for n in range(6)))
    assert results == [True] * 4 + [False] * 2 and outbox.pending == 4
    outbox.close()


async def test_delivered_events_carry_the_event_headers(stack, tmp_path: Path):
    topic = f"parley.test.outbox.{RUN_ID}.{uuid.uuid4().hex[:6]}"
    await ensure_topics(stack.kafka_bootstrap, [topic], partitions=1)
    outbox = Outbox(tmp_path / "headers.sqlite", EventProducer(stack.kafka_bootstrap), name="test-headers")
    outbox.start()
    await outbox.publish(topic, "t-outbox", _turn(1), trace_id='trace "1"\\é')
    await outbox.publish(topic, "t-outbox", _turn(2))
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=stack.kafka_bootstrap, group_id=None,
                                auto_offset_reset="earliest")
    await consumer.start()
    records = []
    try:
        end = asyncio.get_running_loop().time() + 30
        while len(records) < 2 and asyncio.get_running_loop().time() < end:
            for messages in (await consumer.getmany(timeout_ms=500)).values():
                records += messages
    finally:
        await consumer.stop()
        await outbox.stop()
    assert [dict(r.headers) for r in records][0] == {
        "event-type": b"parley.v1.ChatTurn", "schema-version": b"1", "trace-id": 'trace "1"\\é'.encode()}
    second = dict(records[1].headers)
    assert second["event-type"] == b"parley.v1.ChatTurn" and len(second["trace-id"]) == 32  # a fresh id
    assert [r.key for r in records] == [b"t-outbox", b"t-outbox"]


async def test_batched_delivery_puts_each_key_where_a_single_send_would_in_order(stack, tmp_path: Path):
    batched, single = (f"parley.test.outbox.{RUN_ID}.{uuid.uuid4().hex[:6]}" for _ in range(2))
    await ensure_topics(stack.kafka_bootstrap, [batched, single], partitions=3)
    keys = [f"t-key-{i}" for i in range(7)]
    outbox = Outbox(tmp_path / "partitions.sqlite", EventProducer(stack.kafka_bootstrap), name="test-partitions")
    outbox.start()
    producer = AIOKafkaProducer(bootstrap_servers=stack.kafka_bootstrap)
    await producer.start()
    try:
        for n in range(42):
            assert await outbox.publish(batched, keys[n % 7], _turn(n))
            await producer.send_and_wait(single, _turn(n).SerializeToString(), key=keys[n % 7].encode())
        where: dict[str, dict[str, int]] = {}
        order: dict[str, list[int]] = {}
        for topic in (batched, single):
            consumer = AIOKafkaConsumer(topic, bootstrap_servers=stack.kafka_bootstrap, group_id=None,
                                        auto_offset_reset="earliest")
            await consumer.start()
            seen = 0
            try:
                end = asyncio.get_running_loop().time() + 30
                while seen < 42 and asyncio.get_running_loop().time() < end:
                    for tp, messages in (await consumer.getmany(timeout_ms=500)).items():
                        for m in messages:
                            seen += 1
                            where.setdefault(topic, {})[m.key.decode()] = tp.partition
                            if topic == batched:
                                order.setdefault(m.key.decode(), []).append(int(events_pb2.ChatTurn.FromString(
                                    m.value).request_id[1:]))
            finally:
                await consumer.stop()
            assert seen == 42, topic
    finally:
        await producer.stop()
        await outbox.stop()
    assert where[batched] == where[single] and len(set(where[batched].values())) > 1
    assert all(ns == sorted(ns) and len(ns) == 6 for ns in order.values()), order


class _CountingProducer(EventProducer):
    """The real producer, counting its delivery rounds and the events in each."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__(bootstrap)
        self.rounds: list[int] = []

    async def send_rows(self, rows):
        self.rounds.append(len(rows))
        return await super().send_rows(rows)


async def test_a_steady_trickle_of_events_is_delivered_in_lingering_rounds_and_a_backlog_at_once(stack, tmp_path):
    """Under steady load each round's round trip lets one or two events in: a round that took all
    there was waits for the linger, so rounds stay few and full (a round per event cost ~10x the CPU).
    A backlog of full rounds goes back to back."""
    topic = f"parley.test.outbox.{RUN_ID}.{uuid.uuid4().hex[:6]}"
    await ensure_topics(stack.kafka_bootstrap, [topic], partitions=1)
    producer = _CountingProducer(stack.kafka_bootstrap)
    outbox = Outbox(tmp_path / "trickle.sqlite", producer, name="test-trickle", batch=50)
    outbox.start()
    try:
        await outbox.publish(topic, "t-outbox", _turn(0))
        for _ in range(100):                       # the producer is up, the first round is done
            if not outbox.pending:
                break
            await asyncio.sleep(0.05)
        producer.rounds.clear()
        loop = asyncio.get_running_loop()
        start = loop.time()
        for n in range(1, 301):                   # one event every ~2 ms
            await outbox.publish(topic, "t-outbox", _turn(n))
            await asyncio.sleep(0.002)
        elapsed = loop.time() - start
        for _ in range(200):
            if not outbox.pending:
                break
            await asyncio.sleep(0.05)
        assert outbox.pending == 0 and sum(producer.rounds) == 300
        # One round per linger at most (and the one a backlog may add): the old loop made ~150 here.
        assert len(producer.rounds) <= elapsed / DELIVERY_LINGER_SECONDS + 5, producer.rounds
    finally:
        await outbox.stop()
    assert [t.request_id for t in await _read(stack.kafka_bootstrap, topic, 301)] == [f"r{n}" for n in range(301)]


async def test_the_kafka_probe_trusts_a_fresh_acknowledgement_and_asks_again_after_a_reset(stack):
    topic = f"parley.test.outbox.{RUN_ID}.{uuid.uuid4().hex[:6]}"
    await ensure_topics(stack.kafka_bootstrap, [topic], partitions=1)
    producer = EventProducer(stack.kafka_bootstrap)
    await producer.start()
    asked = []
    try:
        assert await producer.send_rows([(topic, b"k", b"v", [])]) == [None]
        fetch = producer._producer.client.fetch_all_metadata
        producer._producer.client.fetch_all_metadata = lambda: asked.append(1) or fetch()
        await producer.ping()
        assert asked == []               # the broker acknowledged a batch a moment ago
        await producer.ping(fresh_seconds=0)
        assert asked == [1]
        await producer.reset()
        await producer.ping()            # a fresh producer: started by the probe, and the broker asked
        assert producer._started
    finally:
        await producer.stop()


async def test_the_kafka_probe_of_a_producer_that_sent_nothing_yet_asks_the_broker(stack):
    """A process that has sent no event yet: the probe starts the producer and asks the broker (it
    failed with the broker up, and the service said Kafka was down until its first chat); with no
    broker, it fails."""
    producer = EventProducer(stack.kafka_bootstrap)
    try:
        await asyncio.wait_for(producer.ping(), 10)
    finally:
        await producer.stop()
    nowhere = EventProducer(f"127.0.0.1:{free_port()}")
    try:
        with pytest.raises(Exception):
            await asyncio.wait_for(nowhere.ping(), 10)
    finally:
        await nowhere.stop()


# A process that publishes events with no broker to send them to, says how many `publish` calls
# returned True, and is then SIGKILLed: no stop, no drain, no close of the SQLite file.
_PUBLISHER = """
import asyncio, sys
from pathlib import Path
from services.common.kafka import EventProducer
from services.common.outbox import DELIVERY_LINGER_SECONDS, Outbox
from services.common.pb.parley.v1 import events_pb2

async def main():
    outbox = Outbox(Path(sys.argv[1]), EventProducer(sys.argv[2]), name="test-killed", round_timeout_seconds=2)
    outbox.start()
    n = 0
    while True:
        # Five at once, as concurrent turns publish: their rows go in one transaction.
        turns = [events_pb2.ChatTurn(event_id=f"killed-{n + i}", product_key_id="t-outbox") for i in range(5)]
        assert all(await asyncio.gather(*[outbox.publish("t", "t-outbox", t) for t in turns]))
        n += len(turns)
        print(n, flush=True)

asyncio.run(main())
"""


async def test_every_published_event_survives_a_sigkill_of_the_process(tmp_path: Path):
    """`publish` returns once the event is in the file: a replica SIGKILLed right after answering
    (an out-of-memory kill, no drain) still has every event it acknowledged when it starts again."""
    import os
    import signal
    import subprocess
    import sys

    path = tmp_path / "response-1.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", _PUBLISHER, str(path), UNREACHABLE], stdout=subprocess.PIPE,
                            cwd=Path(__file__).parents[2], text=True)
    acknowledged = 0
    try:
        for line in proc.stdout:
            acknowledged = int(line)
            if acknowledged >= 300:
                break
        os.kill(proc.pid, signal.SIGKILL)
        for line in proc.stdout:     # what it printed before the signal landed
            acknowledged = int(line)
    finally:
        proc.kill()
        proc.wait()
    assert acknowledged >= 300, "the publisher did not start"
    reopened = Outbox(path, EventProducer(UNREACHABLE), name="test-reopened")
    reopened.open()
    try:
        assert reopened.pending >= acknowledged
    finally:
        reopened.close()


async def test_an_event_over_the_size_limit_is_refused_at_publish_and_nothing_is_written(tmp_path: Path):
    from services.common.outbox import MAX_EVENT_BYTES, EventTooLarge

    outbox = Outbox(tmp_path / "large.sqlite", EventProducer(UNREACHABLE), name="test-large")
    outbox.open()
    try:
        big = _turn(1)
        big.answer = "x" * MAX_EVENT_BYTES
        with pytest.raises(EventTooLarge, match=r"parley.v1.ChatTurn event to t has \d+ bytes; .* at most 900000"):
            await outbox.publish("t", "k", big)
        assert outbox.pending == 0 and outbox._db.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0
        fits = _turn(2)
        fits.answer = "x" * (MAX_EVENT_BYTES - 1000)   # just under the limit, with the key and headers
        assert await outbox.publish("t", "k", fits) is True and outbox.pending == 1
    finally:
        outbox.close()


async def test_a_stored_event_over_the_size_limit_is_dropped_at_start_and_the_rest_delivered(stack, tmp_path: Path,
                                                                                           caplog):
    import logging

    from services.common.outbox import MAX_EVENT_BYTES, headers_json

    topic = f"parley.test.outbox.{RUN_ID}.{uuid.uuid4().hex[:6]}"
    await ensure_topics(stack.kafka_bootstrap, [topic], partitions=1)
    path = tmp_path / "oversized.sqlite"
    old = Outbox(path, EventProducer(UNREACHABLE), name="test-oversized-old")
    old.open()
    assert await old.publish(topic, "t-outbox", _turn(0))
    big = _turn(1)
    big.answer = "x" * (MAX_EVENT_BYTES + 10)   # stored by a version without the limit
    old._db.execute("INSERT INTO outbox (topic, key, value, headers) VALUES (?, ?, ?, ?)",
                    (topic, b"t-outbox", big.SerializeToString(), headers_json(big, "trace-of-the-big-one")))
    assert await old.publish(topic, "t-outbox", _turn(2))
    old.close()

    caplog.set_level(logging.ERROR, logger="services.common.outbox")
    labels = {"outbox": "test-oversized", "topic": topic}
    before = REGISTRY.get_sample_value("parley_outbox_dropped_total", labels) or 0.0
    outbox = Outbox(path, EventProducer(stack.kafka_bootstrap), name="test-oversized")
    outbox.start()
    try:
        assert outbox.pending == 2 and outbox.dropped == 1
        for _ in range(300):
            if outbox.pending == 0:
                break
            await asyncio.sleep(0.1)
        assert outbox.pending == 0 and not outbox.last_error
    finally:
        await outbox.stop()
    seen = await _read(stack.kafka_bootstrap, topic, 2)
    assert [e.event_id for e in seen] == [f"{RUN_ID}-0", f"{RUN_ID}-2"]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("trace-of-the-big-one" in m and "parley.v1.ChatTurn" in m and "over the limit of 900000" in m
               for m in errors), errors
    assert REGISTRY.get_sample_value("parley_outbox_dropped_total", labels) == before + 1


# A process that publishes events through an outbox whose file cannot grow (RLIMIT_FSIZE at the
# size its files have: as on a full disk, SQLite's next write fails with an I/O error; Python ignores
# SIGXFSZ) and prints, as JSON, what `publish` and the health check said in each phase.
_UNWRITABLE = """
import asyncio, json, os, resource, sys
from pathlib import Path
from services.common.kafka import EventProducer
from services.common.outbox import Outbox
from services.common.pb.parley.v1 import events_pb2

path, bootstrap, topic, phases = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)

def disk_full():
    resource.setrlimit(resource.RLIMIT_FSIZE, (max(p.stat().st_size for p in path.parent.iterdir()), hard))

def disk_freed():
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))

async def main():
    bound = {"max_memory_events": int(os.environ["MEMORY"])} if "MEMORY" in os.environ else {}
    outbox = Outbox(path, EventProducer(bootstrap), name="test-unwritable", round_timeout_seconds=2, **bound)
    outbox.start()
    n, report = 0, {}

    async def publish(count):
        nonlocal n
        said = []
        for _ in range(count):
            said.append(await outbox.publish(topic, "t-outbox", events_pb2.ChatTurn(
                event_id=f"unwritable-{n}", product_key_id="t-outbox", answer="a" * 2000)))
            n += 1
        return said

    async def health():
        try:
            await outbox.ping()
            return "ok"
        except Exception as exc:
            return str(exc)

    async def drained(seconds=30):
        for _ in range(int(seconds / 0.05)):
            if outbox.pending == 0:
                return True
            await asyncio.sleep(0.05)
        return False

    for phase in phases.split(","):
        if phase == "written":        # the file takes them; delivered
            report[phase] = {"published": await publish(5), "drained": await drained()}
        elif phase == "undeletable":  # written, then the disk fills before their delivery deletes them
            said = await publish(5)
            disk_full()
            report[phase] = {"published": said, "drained": await drained()}
        elif phase == "full":         # the file refuses them
            disk_full()
            said = await publish(20)
            report[phase] = {"published": said, "health": await health(), "drained": await drained()}
        elif phase == "held":         # the file refuses them, Kafka is away: held in memory, up to the bound
            disk_full()
            said = await publish(5)
            report[phase] = {"published": said, "health": await health(), "pending": outbox.pending}
        elif phase == "freed":        # space again: the next write succeeds
            disk_freed()
            await asyncio.sleep(1.1)
            said = await publish(5)
            report[phase] = {"published": said, "health": await health(), "drained": await drained(),
                             "pending": outbox.pending}
    report["spilled"], report["dropped"] = getattr(outbox, "spilled", None), outbox.dropped
    await outbox.stop(drain_seconds=1)
    print(json.dumps(report), flush=True)

asyncio.run(main())
"""


async def _run_unwritable(path: Path, bootstrap: str, topic: str, phases: str, **env) -> dict:
    import json
    import os
    import sys

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _UNWRITABLE, str(path), bootstrap, topic, phases, cwd=Path(__file__).parents[2],
        env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, err.decode()[-3000:]
    return json.loads(out.decode().strip().splitlines()[-1])


async def test_events_the_file_refuses_reach_kafka_from_memory_in_order_and_health_says_so(stack, tmp_path: Path):
    """A full disk under the outbox (its files may not grow) while Kafka is up: every event is still
    acknowledged and delivered, once and in order, and the `outbox` health detail fails from the first
    failed write until a write succeeds again. Delivered rows the full disk keeps from being deleted are
    not sent again."""
    topic = f"parley.test.outbox.{RUN_ID}.{uuid.uuid4().hex[:6]}"
    await ensure_topics(stack.kafka_bootstrap, [topic], partitions=1)
    report = await _run_unwritable(tmp_path / "outbox" / "response-1.sqlite", stack.kafka_bootstrap, topic,
                                   "written,undeletable,full,freed")
    assert report["written"] == {"published": [True] * 5, "drained": True}
    assert report["undeletable"] == {"published": [True] * 5, "drained": True}
    assert report["full"]["published"] == [True] * 20 and report["full"]["drained"]
    assert "not writable" in report["full"]["health"]
    assert report["freed"] == {"published": [True] * 5, "health": "ok", "drained": True, "pending": 0}
    assert report["spilled"] >= 20 and report["dropped"] == 0
    seen = await _read(stack.kafka_bootstrap, topic, 35)
    await asyncio.sleep(1.0)
    seen += await _read_after(stack.kafka_bootstrap, topic, len(seen))
    assert [e.event_id for e in seen] == [f"unwritable-{n}" for n in range(35)]


async def _read_after(bootstrap: str, topic: str, offset: int) -> list[events_pb2.ChatTurn]:
    """What the topic holds past `offset` (its one partition): a copy sent again would be there."""
    from aiokafka import TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek(tp, offset)
        batch = await consumer.getmany(tp, timeout_ms=1000)
        return [events_pb2.ChatTurn.FromString(m.value) for m in batch.get(tp, [])]
    finally:
        await consumer.stop()


async def test_with_the_file_refusing_and_kafka_away_memory_holds_events_up_to_its_bound_then_the_file(tmp_path):
    """Neither the file nor Kafka takes events: memory holds `max_memory_events`, the next are refused
    (publish False, counted); once the file takes writes again, the held events go into it before the
    new one, in order."""
    path = tmp_path / "outbox" / "response-1.sqlite"
    report = await _run_unwritable(path, UNREACHABLE, "t", "held,freed", MEMORY="3")
    assert report["held"]["published"] == [True, True, True, False, False]
    assert "not writable" in report["held"]["health"] and report["held"]["pending"] == 3
    assert report["freed"]["published"] == [True] * 5 and report["freed"]["health"] == "ok"
    assert report["freed"]["pending"] == 8 and report["dropped"] == 2
    reopened = Outbox(path, EventProducer(UNREACHABLE), name="test-reopened")
    reopened.open()
    try:
        stored = [events_pb2.ChatTurn.FromString(v).event_id
                  for (v,) in reopened._db.execute("SELECT value FROM outbox ORDER BY seq")]
    finally:
        reopened.close()
    assert stored == [f"unwritable-{n}" for n in (0, 1, 2, 5, 6, 7, 8, 9)]


async def test_a_corrupt_outbox_file_is_moved_aside_and_a_fresh_one_delivers(stack, tmp_path: Path, caplog):
    import logging

    topic = f"parley.test.outbox.{RUN_ID}.{uuid.uuid4().hex[:6]}"
    await ensure_topics(stack.kafka_bootstrap, [topic], partitions=1)
    path = tmp_path / "response-1.sqlite"
    old = Outbox(path, EventProducer(UNREACHABLE), name="test-corrupt-old")
    old.open()
    assert await old.publish(topic, "t-outbox", _turn(0))
    old.close()
    garbage = b"this is not an SQLite file " * 4000
    path.write_bytes(garbage)

    caplog.set_level(logging.ERROR, logger="services.common.outbox")
    before = REGISTRY.get_sample_value("parley_outbox_corrupt_files_total", {"outbox": "test-corrupt"}) or 0.0
    outbox = Outbox(path, EventProducer(stack.kafka_bootstrap), name="test-corrupt")
    outbox.start()
    try:
        assert outbox.pending == 0
        assert await outbox.publish(topic, "t-outbox", _turn(1))
        await outbox.ping()
        for _ in range(300):
            if outbox.pending == 0:
                break
            await asyncio.sleep(0.1)
        assert outbox.pending == 0
    finally:
        await outbox.stop()
    assert [e.event_id for e in await _read(stack.kafka_bootstrap, topic, 1)] == [f"{RUN_ID}-1"]
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("response-1.sqlite.corrupt-")]
    assert [p.read_bytes() for p in aside if not p.name.endswith(("-wal", "-shm"))] == [garbage]
    assert REGISTRY.get_sample_value("parley_outbox_corrupt_files_total", {"outbox": "test-corrupt"}) == before + 1
    assert any("not a database" in r.getMessage() and "corrupt-" in r.getMessage()
               for r in caplog.records if r.levelno == logging.ERROR), caplog.records
