"""Word-by-word coverage of a question by the passages read, as a NO_ANSWER feature (measured, not in Plan).

    env PARLEY_ANSWER_MIN_DENSE=0 PARLEY_ANSWER_MIN_SUPPORT=0 PARLEY_UNKNOWN_MIN_SUPPORT=0 \\
        PARLEY_PASSAGE_MIN_DENSE=0 PARLEY_KNOWLEDGE_MIN_SCORE=0 PARLEY_EXTRACTIVE_MIN_SIMILARITY=-1 \\
        .venv/bin/python -m bench.eval_dev --out dev-permissive.json
    .venv/bin/python -m bench.token_coverage dev-permissive.json

For each dev question about the product (answerable or not) with passages: every content word of the
question (its word pieces' contextual vectors, averaged) against every word piece of the five passages
Plan returned, the best cosine per word; the mean and the weakest of those. Prints each feature's AUC
against the unanswerable questions (beside Plan's support and covered share), then the support plus
w x the mean as a NO_ANSWER rule: its threshold chosen on all sites but one (answerable answered
NO_ANSWER at most 5%) and tried on the one left out, for each site in turn.
"""

from __future__ import annotations

import argparse
import json
import re

import numpy as np

from services.common.embedding import Embedder, _padded

# Words that carry no topic of their own (question words, auxiliaries, pronouns, greetings).
_STOP = set("""a an the and or but if of to in on at for with by from is are was were be been being do does did
can could will would should shall may might must i me my we our you your it its this that these those there here
what which who whom how when where why not no yes have has had get got please hi hello thanks thank any some
about as into than then so just also up out over more most very too much many one""".split())


def _encode(embedder: Embedder, session, text: str):
    encoding = embedder._pieces.encode(text)
    hidden = embedder._encode(*_padded([encoding.ids]), session)[0]
    return encoding, hidden / np.linalg.norm(hidden, axis=1, keepdims=True)


def _content_words(encoding, text: str) -> list[list[int]]:
    """The word-piece positions of each content word of `text`."""
    words: dict[int, list[int]] = {}
    for position, word in enumerate(encoding.word_ids):
        if word is not None:
            words.setdefault(word, []).append(position)
    kept = []
    for positions in words.values():
        word = text[encoding.offsets[positions[0]][0]:encoding.offsets[positions[-1]][1]].lower()
        if re.search(r"[a-z0-9]", word) and word not in _STOP:
            kept.append(positions)
    return kept


def features(records: dict) -> list[dict]:
    embedder = Embedder.load()
    session = embedder.session(2)
    rows = []
    for site, questions in records.items():
        if site == "total":
            continue
        for r in questions:
            if r["kind"] not in ("answerable", "unanswerable") or not r["passages"]:
                continue
            encoding, hidden = _encode(embedder, session, r["text"])
            words = _content_words(encoding, r["text"])
            if not words:
                continue
            pieces = np.concatenate([_encode(embedder, session, f"{p['title'] or ''}\n{p['text']}")[1][1:-1]
                                     for p in r["passages"][:5]])
            vectors = np.stack([hidden[w].mean(axis=0) for w in words])
            best = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True) @ pieces.T).max(axis=1)
            rows.append({"site": site, "kind": r["kind"], "mean": float(best.mean()), "weakest": float(best.min()),
                         "support": r["scores"].get("support", 0.0), "covered": r["scores"].get("covered", 0.0)})
    return rows


def auc(rows: list[dict], feature: str) -> float:
    """How often an unanswerable question scores below an answerable one (ties half)."""
    low = [r[feature] for r in rows if r["kind"] == "unanswerable"]
    high = [r[feature] for r in rows if r["kind"] == "answerable"]
    return sum((a < b) + 0.5 * (a == b) for a in low for b in high) / max(1, len(low) * len(high))


def _refused(rows: list[dict], w: float, threshold: float) -> tuple[int, int]:
    lost = sum(r["kind"] == "answerable" and r["support"] + w * r["mean"] < threshold for r in rows)
    caught = sum(r["kind"] == "unanswerable" and r["support"] + w * r["mean"] < threshold for r in rows)
    return lost, caught


def leave_one_site_out(rows: list[dict], w: float, max_lost: float = 0.05) -> tuple[float, float]:
    """(answerable answered NO_ANSWER, NO_ANSWER recall) over all sites, each with the threshold chosen
    on the others."""
    lost = caught = 0
    for site in sorted({r["site"] for r in rows}):
        train = [r for r in rows if r["site"] != site]
        answerable = sum(r["kind"] == "answerable" for r in train)
        best, threshold = -1, 0.0
        for t in np.arange(0.0, 2.5, 0.005):
            l, c = _refused(train, w, t)
            if l <= max_lost * answerable and c > best:
                best, threshold = c, t
        l, c = _refused([r for r in rows if r["site"] == site], w, threshold)
        lost, caught = lost + l, caught + c
    return (lost / sum(r["kind"] == "answerable" for r in rows),
            caught / sum(r["kind"] == "unanswerable" for r in rows))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("records", help="bench.eval_dev --out of a run at the permissive settings")
    args = parser.parse_args(argv)
    with open(args.records) as f:
        rows = features(json.load(f))
    for feature in ("mean", "weakest", "support", "covered"):
        print(f"AUC {feature:8} {auc(rows, feature):.3f}")
    for w in (0.0, 0.25, 0.5, 1.0):
        lost, recall = leave_one_site_out(rows, w)
        print(f"support + {w:g} x mean: answerable->NO_ANSWER {lost:.3f}, NO_ANSWER recall {recall:.3f}")


if __name__ == "__main__":
    main()
