"""Choose the answer thresholds on the dev split of the help-site evaluation, never on the test split.

    EVAL_TUNING=1 make bench ARGS="--only search-eval"      # every threshold at its most permissive
    .venv/bin/python -m bench.eval_tune bench/results/bench-<time>.json

or, quicker, in one process (bench/eval_dev.py, dev questions only) with the same permissive settings:

    env PARLEY_ANSWER_MIN_DENSE=0 PARLEY_ANSWER_MIN_SUPPORT=0 PARLEY_PASSAGE_MIN_DENSE=0 \
        PARLEY_KNOWLEDGE_MIN_SCORE=0 PARLEY_EXTRACTIVE_MIN_SIMILARITY=-1 \
        .venv/bin/python -m bench.eval_dev --out dev-tuning.json
    .venv/bin/python -m bench.eval_tune dev-tuning.json

The tuning run records, for each dev question, Plan's best dense cosine and its passages (test
questions carry no passages). Here each dev question about the product (answerable or not) is
replayed with every triple (answer_min_dense, answer_min_support, extractive_min_similarity) of a grid:
NO_ANSWER when the best passage score is below the first, or its support (strategy.support(): how far
it stands above the mean of the 10 best, plus 0.2 times the share of the message's terms the knowledge
contains, plus PARLEY_COVERED_WEIGHT times the covered share of the passages read, as the run recorded
it) below the second, or when no sentence of the passages reaches the third;
otherwise the extractive answer (a question Plan answered NO_ANSWER even at the permissive settings, the
thing it asks for being named nowhere in the knowledge, strategy.unnamed(), stays NO_ANSWER). The pair chosen keeps the answerable questions answered NO_ANSWER
at or below the goal (--max-lost, 0.05) and, within that, maximises the NO_ANSWER recall of the
unanswerable ones, then the share of answers that contain the expected fact, then prefers the lower
answer_min_support and the higher answer_min_dense and extractive_min_similarity (the same dev outcome
with a wider margin against answering an unrelated message or quoting an unrelated sentence). (Plain accuracy would choose 0 and 0: on this mix, 86% answerable, the scores separate
the two kinds too weakly for any threshold to pay.)
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from services.response.extractive import ExtractiveAnswerer
from services.response.llm import AnswerRequest, PassageText
from services.search.evaluation import fact_found

GRID = [round(0.02 * i, 2) for i in range(0, 31)]     # 0.00 .. 0.60
PEAK_GRID = [round(0.01 * i, 2) for i in range(0, 31)]   # support: 0.00 .. 0.30


@dataclass(frozen=True)
class Replay:
    kind: str
    dense: float              # Plan's best dense score
    peak: float               # its support (strategy.support())
    best_sentence: float      # the extractive answerer's best sentence cosine (-1: no candidate)
    has_fact: bool            # the permissive answer contains an expected fact
    refused: bool = False     # NO_ANSWER whatever the thresholds (strategy.unnamed(): the thing asked
                              # for is named nowhere in the knowledge), as the permissive run decided


class _Measuring(ExtractiveAnswerer):
    """The extractive answerer that also remembers its best sentence cosine."""

    best = -1.0

    def _compose(self, candidates, similarity, passages):
        self.best = max(similarity) if similarity else -1.0
        return super()._compose(candidates, similarity, passages)


def replay(record: dict) -> Replay:
    answerer = _Measuring(min_similarity=-1.0)
    passages = [PassageText(p["id"], p["kind"], p["title"], p["text"], p["score"]) for p in record["passages"]]
    answer = answerer.answer(AnswerRequest(record["text"], "", "", "KNOWLEDGE", passages))
    return Replay(record["kind"], float(record["scores"].get("dense", 0.0)), float(record["scores"].get("support", 0.0)),
                  answerer.best,
                  fact_found(tuple(record["facts"]), answer.text),
                  record.get("plan_strategy") == "NO_ANSWER")


def outcome(items: list[Replay], min_dense: float, min_sentence: float, min_peak: float = 0.0
            ) -> tuple[float, float, float, float]:
    """(right outcomes, fact in answer of answerable, answerable→NO_ANSWER, NO_ANSWER recall)."""
    answerable = [r for r in items if r.kind == "answerable"]
    unanswerable = [r for r in items if r.kind == "unanswerable"]

    def answered(r: Replay) -> bool:
        return not r.refused and r.dense >= min_dense and r.peak >= min_peak and r.best_sentence >= min_sentence

    right = sum(answered(r) for r in answerable) + sum(not answered(r) for r in unanswerable)
    facts = sum(answered(r) and r.has_fact for r in answerable)
    return (right / max(1, len(items)), facts / max(1, len(answerable)),
            sum(not answered(r) for r in answerable) / max(1, len(answerable)),
            sum(not answered(r) for r in unanswerable) / max(1, len(unanswerable)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="bench results JSON of an EVAL_TUNING=1 run")
    parser.add_argument("--max-lost", type=float, default=0.05, help="most answerable questions answered NO_ANSWER")
    args = parser.parse_args(argv)
    cache = args.results.with_suffix(".replay.json")
    if cache.exists():
        items = [Replay(**r) for r in json.loads(cache.read_text())]
    else:
        data = json.loads(args.results.read_text())
        if "scenarios" in data:
            scenario = next(s for s in data["scenarios"] if s["scenario"] == "search-eval")
            if not scenario.get("tuning"):
                raise SystemExit("not a tuning run: run it with EVAL_TUNING=1")
            by_site = scenario["questions"]
        else:    # bench/eval_dev.py's records: dev questions only
            by_site = {name: [{**r, "split": "dev"} for r in records] for name, records in data.items()
                       if name != "total"}
        items = [replay(r) for records in by_site.values() for r in records
                 if r["split"] == "dev" and r["kind"] in ("answerable", "unanswerable")]
        cache.write_text(json.dumps([r.__dict__ for r in items]))
    ranked = sorted(((outcome(items, d, s, p), d, s, p) for d in GRID for s in GRID for p in PEAK_GRID),
                    key=lambda x: (x[0][2] > args.max_lost, -x[0][3], -x[0][1], x[3], -x[1], -x[2]))
    print(f"{len(items)} dev questions about the products "
          f"({sum(r.kind == 'answerable' for r in items)} answerable)")
    print("answer_min_dense  answer_min_support  extractive_min_similarity  right  fact  answerable→NO_ANSWER  NO_ANSWER recall")
    for (right, fact, lost, recall), d, s, p in ranked[:10]:
        print(f"{d:16.2f}  {p:18.3f}  {s:25.2f}  {right:.3f}  {fact:.3f}  {lost:20.3f}  {recall:.3f}")
    (right, fact, lost, recall), d, s, p = ranked[0]
    print(f"chosen: PARLEY_ANSWER_MIN_DENSE={d:g} PARLEY_ANSWER_MIN_SUPPORT={p:g} PARLEY_EXTRACTIVE_MIN_SIMILARITY={s:g}")


if __name__ == "__main__":
    main()
