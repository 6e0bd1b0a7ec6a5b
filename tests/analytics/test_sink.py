"""The sink against the real PostgreSQL: replays change nothing, histograms merge exactly, a bad
event is dead-lettered alone."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from datetime import datetime, timedelta, timezone

import asyncpg
import pytest

from services.analytics import histogram, queries
from services.analytics.stream import progress, rows
from services.analytics.stream.apply import BatchApplier, Record, is_transient
from services.analytics.stream.decode import DeadLetter
from services.analytics.stream.sink import MetricsSink, Position
from services.common.kafka import new_event_id
from services.common.pb.parley.v1 import common_pb2, events_pb2


def make_turn(key_id: str, total_ms: float, strategy=common_pb2.STRATEGY_KNOWLEDGE) -> events_pb2.ChatTurn:
    turn = events_pb2.ChatTurn(
        event_id=new_event_id(), product_key_id=key_id, session_id="s", request_id=uuid.uuid4().hex,
        message="q", answer="a", strategy=strategy, model="extractive", cache_status=common_pb2.CACHE_STATUS_MISS,
        timings=common_pb2.Timings(total_ms=total_ms, search_ms=total_ms / 2, ttft_ms=1.0, llm_ms=total_ms / 3),
        usage=common_pb2.TokenUsage(prompt_tokens=10, completion_tokens=5),
    )
    turn.occurred_at.FromDatetime(datetime(2026, 1, 1, 12, 30, 15, tzinfo=timezone.utc))
    return turn


async def _sink(sink_pool, settings) -> MetricsSink:
    sink = MetricsSink(settings.postgres_dsn, f"sink-test-{uuid.uuid4().hex[:6]}")
    sink.pool = sink_pool
    return sink


async def test_replaying_a_batch_counts_nothing_twice(pg, settings, sink_pool):
    key_id = f"sink-{uuid.uuid4().hex[:8]}"
    turns = [make_turn(key_id, ms) for ms in (3.0, 7.5, 12.0, 250.0)]
    sink = await _sink(sink_pool, settings)
    records = [(Position("t", 0, i), t) for i, t in enumerate(turns)]
    first = await sink.write_turns(records)
    replay = await sink.write_turns(records)  # the same offsets again: dropped by the stored offsets
    # The same events again at new offsets (a producer retry), twice inside one batch: dropped by event id.
    again = await sink.write_turns([(Position("t", 1, i), t) for i, t in enumerate(turns[:2] + turns[:2])])
    assert (first.applied, replay.applied, replay.skipped) == (4, 0, 4)
    assert again.applied == 4  # passed the offset check; the event ids keep them from counting
    row = await pg.fetchrow("SELECT turns, tokens_in, total_hist FROM metrics_minute WHERE product_key_id = $1", key_id)
    assert row["turns"] == 4
    assert row["tokens_in"] == 40
    assert sum(row["total_hist"]) == 4
    assert await pg.fetchval("SELECT count(*) FROM conversations WHERE product_key_id = $1", key_id) == 4
    assert await sink.stored_offsets() == {("t", 0): 4, ("t", 1): 4}


async def test_a_batch_is_written_again_only_when_it_holds_an_event_stored_before(pg, settings, sink_pool):
    key_id = f"again-{uuid.uuid4().hex[:8]}"
    stored, new = [make_turn(key_id, 5.0) for _ in range(3)], [make_turn(key_id, 50.0) for _ in range(2)]
    sink = await _sink(sink_pool, settings)
    before = progress.BATCHES_WRITTEN_AGAIN._value.get()
    await sink.write_turns([(Position("a", 0, i), t) for i, t in enumerate(stored)])
    assert progress.BATCHES_WRITTEN_AGAIN._value.get() == before  # all new: one plain INSERT
    # Two stored events redelivered at new offsets among two new ones: the plain INSERT fails on the
    # primary key, and the batch is written again with only the new events counted.
    mixed = [stored[0], new[0], stored[2], new[1]]
    applied = await sink.write_turns([(Position("a", 1, i), t) for i, t in enumerate(mixed)])
    assert progress.BATCHES_WRITTEN_AGAIN._value.get() == before + 1
    assert applied.applied == 4
    row = await pg.fetchrow("SELECT turns, total_hist FROM metrics_minute WHERE product_key_id = $1", key_id)
    assert row["turns"] == 5
    assert row["total_hist"][histogram.bucket_of(5.0)] == 3 and row["total_hist"][histogram.bucket_of(50.0)] == 2
    assert await pg.fetchval("SELECT count(*) FROM conversations WHERE product_key_id = $1", key_id) == 5
    assert await sink.stored_offsets() == {("a", 0): 3, ("a", 1): 4}


async def test_rows_built_before_the_write_count_each_turn_once_and_never_a_replayed_one(pg, settings, sink_pool):
    """A partition writer builds a batch's rows while the batch before is written (rows.TurnBatch): a
    turn repeated inside the batch counts once, and rows built from events partly below the stored
    offsets (a redelivery) are not used: only the events above them count."""
    key_id = f"ahead-{uuid.uuid4().hex[:8]}"
    turns = [make_turn(key_id, ms) for ms in (3.0, 7.5, 12.0, 250.0, 40.0, 41.0)]
    sink = await _sink(sink_pool, settings)

    def built(events) -> rows.TurnBatch:
        batch = rows.TurnBatch()
        batch.add(events[:3])
        batch.add(events[3:])
        return batch

    with_repeat = turns[:4] + turns[1:2]  # a producer's retry inside the batch
    written_again = progress.BATCHES_WRITTEN_AGAIN._value.get()
    first = await sink.write_turns([(Position("r", 0, i), t) for i, t in enumerate(with_repeat)], built(with_repeat))
    # Redelivered from offset 0 with two more: the rows built for all six would count four again.
    more = turns[:4] + turns[4:]
    again = await sink.write_turns([(Position("r", 0, i + 1), t) for i, t in enumerate(more)], built(more))
    assert (first.applied, again.applied, again.skipped) == (5, 2, 4)
    assert progress.BATCHES_WRITTEN_AGAIN._value.get() == written_again  # the repeat was not sent twice
    row = await pg.fetchrow("SELECT turns, tokens_in, total_hist FROM metrics_minute WHERE product_key_id = $1", key_id)
    assert (row["turns"], row["tokens_in"], sum(row["total_hist"])) == (6, 60, 6)
    assert row["total_hist"][histogram.bucket_of(250.0)] == 1
    assert await pg.fetchval("SELECT count(*) FROM conversations WHERE product_key_id = $1", key_id) == 6
    assert await sink.stored_offsets() == {("r", 0): 7}


async def test_percentiles_agree_with_exact_within_one_bucket(pg, settings, sink_pool):
    key_id = f"pct-{uuid.uuid4().hex[:8]}"
    values = [0.5 + (i * 7.3) % 400 for i in range(500)]
    sink = await _sink(sink_pool, settings)
    # Three batches, as three workers or partitions would write them.
    for n, part in enumerate((values[:100], values[100:333], values[333:])):
        await sink.write_turns([(Position("p", n, i), make_turn(key_id, v)) for i, v in enumerate(part)])
    start = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
    rows = await queries.get_metrics(pg, key_id, start, datetime(2026, 1, 1, 13, 0, tzinfo=timezone.utc))
    total = queries.merge_rows(rows, start)
    ordered = sorted(values)
    for q in (0.5, 0.95, 0.99):
        exact = ordered[max(0, int(round(q * len(ordered))) - 1)]
        lower, upper = histogram.bucket_width(exact)
        got = histogram.percentile(total.hists["total_hist"], q)
        assert lower <= got <= upper * 2 ** (1 / histogram.STEPS_PER_DOUBLING) + 1e-9, (q, exact, got)


async def test_text_postgres_refuses_is_stored_without_nul_and_surrogates(pg, settings, sink_pool):
    key_id = f"nul-{uuid.uuid4().hex[:8]}"
    turn = make_turn(key_id, 5.0)
    turn.message = "before\x00after"
    turn.answer = "an answer\x00"
    turn.source_ids.append("id\x00")
    sink = await _sink(sink_pool, settings)
    applied = await sink.write_turns([(Position("nul", 0, 0), turn)])
    assert applied.applied == 1
    row = await pg.fetchrow("SELECT message, answer, source_ids FROM conversations WHERE product_key_id = $1", key_id)
    assert (row["message"], row["answer"], row["source_ids"]) == ("beforeafter", "an answer", ["id"])
    assert await pg.fetchval("SELECT sum(turns) FROM metrics_minute WHERE product_key_id = $1", key_id) == 1


def test_storable_text():
    assert rows.storable("plain") == "plain"
    assert rows.storable("a\x00b\x00") == "ab"
    assert rows.storable("caf\u00e9 \ud800x") == "caf\u00e9 \ufffdx"
    assert rows.storable("\u00e9\x00\udfff") == "\u00e9\ufffd"


def _record(pos: Position, turn: events_pb2.ChatTurn) -> Record:
    return Record(pos, turn.product_key_id.encode(), turn.SerializeToString(), turn)


async def test_poison_events_are_dead_lettered_and_the_rest_of_the_batch_is_stored(pg, settings, sink_pool):
    key_id = f"split-{uuid.uuid4().hex[:8]}"
    turns = [make_turn(key_id, 1.0 + i) for i in range(40)]
    # Too large for the btree index on (product_key_id, session_id, occurred_at): PostgreSQL refuses the row.
    turns[13].session_id = os.urandom(6000).hex()
    # A timestamp beyond year 9999: the row cannot even be built.
    turns[29].occurred_at.seconds = 400_000_000_000
    letters: list[DeadLetter] = []

    async def collect(letter: DeadLetter) -> None:
        letters.append(letter)

    sink = await _sink(sink_pool, settings)
    applier = BatchApplier(sink.write_turns, collect)
    applied = await applier.apply([_record(Position("split", 3, 100 + i), t) for i, t in enumerate(turns)])
    assert sorted(letter.offset for letter in letters) == [113, 129]
    assert all(letter.value and letter.reason for letter in letters)
    assert "ProgramLimitExceeded" in next(x.reason for x in letters if x.offset == 113)
    assert applied.applied == 38
    assert await pg.fetchval("SELECT count(*) FROM conversations WHERE product_key_id = $1", key_id) == 38
    assert await pg.fetchval("SELECT sum(turns) FROM metrics_minute WHERE product_key_id = $1", key_id) == 38
    assert await sink.stored_offsets() == {("split", 3): 140}


def test_which_errors_are_retried_and_which_split_the_batch():
    for exc in (asyncpg.DeadlockDetectedError(), asyncpg.SerializationError(), asyncpg.AdminShutdownError(),
                asyncpg.CannotConnectNowError(), asyncpg.ConnectionDoesNotExistError(), ConnectionRefusedError(),
                asyncpg.TooManyConnectionsError(), asyncio.TimeoutError(),
                # seen while PostgreSQL restarts under a query in flight: a client state error, not the event's fault
                asyncpg.exceptions.InternalClientError("cannot switch to state 12; another operation (2) is in progress"),
                RuntimeError("an error nobody anticipated")):
        assert is_transient(exc), exc
    for exc in (asyncpg.ProgramLimitExceededError(), asyncpg.CharacterNotInRepertoireError(),
                asyncpg.UniqueViolationError(), OverflowError(), asyncpg.exceptions._base.DataError("encode"),
                asyncio.CancelledError()):
        assert not is_transient(exc), exc


async def test_a_write_cancelled_while_it_fails_ends_cancelled_and_is_not_tried_again():
    """A revoked partition's writer past its grace is cancelled while PostgreSQL is away: the write
    ends there, not as an orphan retrying for as long as PostgreSQL stays away."""
    attempts = 0

    async def write(_records, _rows):
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(0.05)
        raise ConnectionRefusedError("PostgreSQL is away")

    async def no_dead_letters(_letter):
        raise AssertionError("nothing is dead-lettered")

    applier = BatchApplier(write, no_dead_letters, max_wait=0.01)
    task = asyncio.create_task(applier.retrying(lambda: write([], None)))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    seen = attempts
    await asyncio.sleep(0.3)
    assert attempts == seen


async def test_feedback_whose_turn_never_comes_stops_being_pending_past_the_horizon_and_stays_unknown(
        pg, settings, sink_pool):
    """A turn dead-lettered or dropped by a full outbox never arrives: its feedback is looked for no
    longer than the horizon (the chat turns' retention), so attribution does not rescan it for good."""
    key_id = f"orphan-{uuid.uuid4().hex[:8]}"
    now = datetime.now(timezone.utc)
    old, recent = (events_pb2.Feedback(event_id=new_event_id(), product_key_id=key_id, request_id=uuid.uuid4().hex,
                                       rating=rating) for rating in (1, -1))
    old.occurred_at.FromDatetime(now - timedelta(days=8))
    recent.occurred_at.FromDatetime(now - timedelta(hours=1))
    sink = await _sink(sink_pool, settings)
    await sink.write_feedback([(Position("fb", 0, 0), old), (Position("fb", 0, 1), recent)])

    async def pending() -> dict[str, bool]:
        rows = await pg.fetch("SELECT event_id, pending FROM feedback_events WHERE product_key_id = $1", key_id)
        return {r["event_id"]: r["pending"] for r in rows}

    assert await pending() == {old.event_id: True, recent.event_id: True}
    await sink.attribute_pending_feedback()
    assert await pending() == {old.event_id: False, recent.event_id: True}   # the recent turn may still come
    counts = await pg.fetch("SELECT strategy, model, feedback_up, feedback_down FROM metrics_minute "
                            "WHERE product_key_id = $1 ORDER BY minute", key_id)
    assert [tuple(r) for r in counts] == [("UNKNOWN", "unknown", 1, 0), ("UNKNOWN", "unknown", 0, 1)]


def _vote(key_id: str, request_id: str, rating: int, when: datetime) -> events_pb2.Feedback:
    feedback = events_pb2.Feedback(event_id=new_event_id(), product_key_id=key_id, request_id=request_id,
                                   rating=rating)
    feedback.occurred_at.FromDatetime(when)
    return feedback


def _same_request(key_id: str) -> list[events_pb2.ChatTurn]:
    """Two stored turns of one request id (a failed report and an answered one, as a producer that
    reported both would leave): the failed one first."""
    failed, answered = make_turn(key_id, 5.0, common_pb2.STRATEGY_NO_ANSWER), make_turn(key_id, 6.0)
    failed.error_code, answered.request_id = "CANCELLED", failed.request_id
    answered.occurred_at.FromDatetime(datetime(2026, 1, 1, 12, 30, 16, tzinfo=timezone.utc))
    return [failed, answered]


async def _feedback_counts(pg, key_id: str) -> dict[tuple[str, str], tuple[int, int]]:
    rows = await pg.fetch("SELECT strategy, model, feedback_up, feedback_down FROM metrics_minute "
                          "WHERE product_key_id = $1 AND (feedback_up, feedback_down) <> (0, 0)", key_id)
    return {(r["strategy"], r["model"]): (r["feedback_up"], r["feedback_down"]) for r in rows}


async def test_a_vote_on_a_request_id_two_stored_turns_share_counts_once(pg, settings, sink_pool):
    """The feedback write finds the turn a vote rates by request id: two stored turns with that id
    counted the vote twice. It counts once, under the answered turn's strategy."""
    key_id = f"dupreq-{uuid.uuid4().hex[:8]}"
    sink = await _sink(sink_pool, settings)
    turns = _same_request(key_id)
    await sink.write_turns([(Position("dupreq-t", 0, i), t) for i, t in enumerate(turns)])
    votes = [_vote(key_id, turns[0].request_id, rating, datetime(2026, 1, 1, 12, 31, tzinfo=timezone.utc))
             for rating in (1, -1)]
    applied = await sink.write_feedback([(Position("dupreq-f", 0, i), v) for i, v in enumerate(votes)])
    assert applied.applied == 2
    assert await _feedback_counts(pg, key_id) == {("KNOWLEDGE", "extractive"): (1, 1)}
    assert await pg.fetchval("SELECT count(*) FROM feedback_events WHERE product_key_id = $1", key_id) == 2


async def test_pending_feedback_whose_request_id_two_stored_turns_share_moves_once_and_leaves_no_zero_row(
        pg, settings, sink_pool):
    """Feedback applied before its turn is counted under UNKNOWN; once two turns with its request id
    are stored it moves, once, to the answered turn's strategy, and the UNKNOWN row it emptied is gone
    (an all-zero row was a point of zeros in GetMetrics by strategy and an "UNKNOWN/unknown": 0 in the
    minute's summary)."""
    key_id = f"duppend-{uuid.uuid4().hex[:8]}"
    minute = datetime(2026, 1, 1, 12, 31, tzinfo=timezone.utc)
    sink = await _sink(sink_pool, settings)
    turns = _same_request(key_id)
    await sink.write_feedback([(Position("duppend-f", 0, 0), _vote(key_id, turns[0].request_id, -1, minute))])
    assert await _feedback_counts(pg, key_id) == {("UNKNOWN", "unknown"): (0, 1)}
    await sink.write_turns([(Position("duppend-t", 0, i), t) for i, t in enumerate(turns)])
    assert (key_id, minute) in await sink.attribute_pending_feedback()
    assert await _feedback_counts(pg, key_id) == {("KNOWLEDGE", "extractive"): (0, 1)}
    assert await pg.fetchval("SELECT count(*) FROM metrics_minute WHERE product_key_id = $1 AND strategy = 'UNKNOWN'",
                             key_id) == 0
    await sink.attribute_pending_feedback()   # a second round moves nothing
    assert await _feedback_counts(pg, key_id) == {("KNOWLEDGE", "extractive"): (0, 1)}


async def test_all_zero_rows_left_by_an_older_worker_are_no_point_and_no_summary_entry(pg, settings, sink_pool):
    """Rows an older worker emptied when it moved pending feedback stay in metrics_minute: GetMetrics
    shows no point for them and the minute's summary no entry."""
    from services.analytics.stream.minutely import MINUTE_SUMMARY, minute_summary_json

    key_id = f"zero-{uuid.uuid4().hex[:8]}"
    minute = datetime(2026, 1, 1, 12, 30, tzinfo=timezone.utc)
    sink = await _sink(sink_pool, settings)
    await sink.write_turns([(Position("zero", 0, 0), make_turn(key_id, 5.0))])
    await pg.execute("INSERT INTO metrics_minute (product_key_id, minute, strategy, model) VALUES ($1, $2, 'UNKNOWN', "
                     "'unknown'), ($1, $2 + interval '1 minute', 'UNKNOWN', 'unknown')", key_id, minute)
    end = minute + timedelta(hours=1)
    by_strategy = await queries.get_metrics(pg, key_id, minute, end, "minute", "strategy")
    assert [(r.bucket_start, r.group, r.counts["turns"]) for r in by_strategy] == [(minute, "KNOWLEDGE", 1)]
    assert [r.counts["turns"] for r in await queries.get_metrics(pg, key_id, minute, end, "minute")] == [1]
    summary = minute_summary_json(key_id, minute, await pg.fetchrow(MINUTE_SUMMARY, key_id, minute))
    assert json.loads(summary)["turns_by_strategy_model"] == {"KNOWLEDGE/extractive": 1}
