"""While a broker recovers, aiokafka repeats the same lines many times a second: each kind of line
goes out once in a while, saying how many were held back; other loggers' lines are untouched."""

from __future__ import annotations

import logging
import time

from services.common.logs import RepeatFilter


def _record(name: str, msg: str, *args) -> logging.LogRecord:
    return logging.LogRecord(name, logging.WARNING, __file__, 1, msg, args, None)


def test_each_kind_of_aiokafka_line_goes_out_once_in_a_while_and_others_untouched():
    repeats = RepeatFilter(("aiokafka",), seconds=0.2)
    heartbeat = "Heartbeat failed for group %s: %s"
    passed = [repeats.filter(_record("aiokafka.consumer.group_coordinator", heartbeat, "g", i)) for i in range(50)]
    assert passed == [True] + [False] * 49
    assert repeats.filter(_record("aiokafka.conn", "Unable to connect to node %s", 1))   # another kind
    assert all(repeats.filter(_record("services.search", heartbeat, "g", i)) for i in range(5))
    time.sleep(0.25)
    again = _record("aiokafka.consumer.group_coordinator", heartbeat, "g", 99)
    assert repeats.filter(again)
    assert again.getMessage() == "Heartbeat failed for group g: 99 (49 more like it since the last)"
