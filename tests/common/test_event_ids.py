"""Event ids: version-7 UUIDs, unique, and ordered by the time they were made (the stream worker's
inserts into conversations' primary key rely on the order)."""

import time
import uuid

from services.common.kafka import new_event_id


def test_event_ids_are_version_7_uuids_with_the_time_in_milliseconds() -> None:
    before = time.time_ns() // 1_000_000
    event_id = new_event_id()
    after = time.time_ns() // 1_000_000
    parsed = uuid.UUID(event_id)
    assert len(event_id) == 32 and parsed.hex == event_id
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert before <= int(event_id[:12], 16) <= after


def test_event_ids_are_unique_and_sort_in_the_order_they_were_made() -> None:
    made = []
    for _ in range(5):
        made.append([new_event_id() for _ in range(20_000)])
        time.sleep(0.002)
    every = [i for batch in made for i in batch]
    assert len(set(every)) == len(every)
    # Within a millisecond the order is random; ids made in a later millisecond sort after.
    for earlier, later in zip(made, made[1:]):
        assert max(earlier) < min(later)
