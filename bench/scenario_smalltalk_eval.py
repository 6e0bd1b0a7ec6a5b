"""Scenario "smalltalk-eval": the small-talk recogniser (services/common/smalltalk.py) on four sets of
chat messages written apart from it (bench/eval/smalltalk): `dev`, `dev2` and `dev3`, whose misses shaped the
phrases (`dev2` was held out until it had been reported once; `dev3` was written for the third round), and
`heldout`, never looked at item by item. Per set and kind: the share of small talk recognised, and the
real questions (many opening with a greeting, or a few words long) taken for small talk.

`make bench ARGS="--only smalltalk-eval"` (no stack needed)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from rich.table import Table

from bench.harness import console
from services.common.smalltalk import classify

NAME = "smalltalk-eval"
SETS = Path(__file__).parent / "eval" / "smalltalk"


def score(path: Path) -> dict:
    data = json.loads(path.read_text())
    total, found = Counter(), Counter()
    for item in data["smalltalk"]:
        total[item["kind"]] += 1
        found[item["kind"]] += classify(item["message"]) is not None
    questions = [q["message"] for q in data["questions"]]
    taken = sum(classify(q) is not None for q in questions)
    return {"smalltalk": len(data["smalltalk"]), "recognised": sum(found.values()),
            "accuracy": round(sum(found.values()) / len(data["smalltalk"]), 3),
            "by_kind": {k: f"{found[k]}/{total[k]}" for k in sorted(total)},
            "questions": len(questions), "questions_taken_as_smalltalk": taken}


async def run(seconds: float, concurrencies: list[int]) -> dict:
    results = {name: score(SETS / f"{name}.json") for name in ("dev", "dev2", "dev3", "heldout")}
    table = Table("set", "small talk recognised", "accuracy", "questions taken as small talk", "by kind",
                  title="small talk on messages written apart from the recogniser")
    for name, r in results.items():
        table.add_row(name, f"{r['recognised']}/{r['smalltalk']}", f"{r['accuracy']:.3f}",
                      f"{r['questions_taken_as_smalltalk']}/{r['questions']}",
                      ", ".join(f"{k} {v}" for k, v in r["by_kind"].items()))
    console.print(table)
    return {"name": NAME, **results}
