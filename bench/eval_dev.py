"""The help-site evaluation on its dev split, in one process, for quick iteration on ranking and answers.

    .venv/bin/python -m bench.eval_dev [--sites trailhead,ledgerloop] [--out dev.json] [--reindex]

Needs only the local PostgreSQL and Redis (`python -m deploy.local up`). Each site's pages (the files
its sitemap names) are extracted and chunked as the crawler does and written through the search
service's indexing path (`Indexing`) into a key of their own (kept between runs: `--reindex` writes
them again, e.g. after a change of chunking or of what is embedded); then every DEV question is
planned by the real `Planner` and answered by the extractive answerer as the response service does.
Test-split questions are never asked here: `make bench ARGS="--only search-eval"` reports them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from pathlib import Path

import asyncpg
import redis.asyncio as redis

from bench.eval_sites import EvalSite, discover, page_key
from services.common.knowledge_store import NewChunk
from services.settings import Settings
from services.response.extractive import ExtractiveAnswerer, smalltalk_reply
from services.response.llm import AnswerRequest, PassageText
from services.scraper.extract import chunk_page, extract_html
from services.search import keys as key_store
from services.search.dense import DenseRetrieval
from services.search.evaluation import Asked, Hit, Outcome, evaluate, load_cases, site_report
from services.search.knowledge import add_document, add_faq
from services.search.indexing import Indexing
from services.search.planner import Planner

COLUMNS = ("hit_at_1", "hit_at_3", "mrr", "fact_in_answer", "answerable_no_answer", "no_answer_precision",
           "no_answer_recall", "smalltalk_accuracy")
_SECRETS = Path(".local/eval_dev_keys.json")


def _site_pages(site: EvalSite) -> list[tuple[str, Path]]:
    urls = re.findall(r"<loc>\s*https?://SITE/([^<\s]*)\s*</loc>", (site.root / "sitemap.xml").read_text())
    return [(f"http://site.test/{u}", site.root / u) for u in urls if (site.root / u).is_file()]


async def _index(pool: asyncpg.Pool, site: EvalSite) -> tuple[str, str]:
    key_id = f"evaldev-{site.name}"
    await pool.execute("DELETE FROM product_keys WHERE id = $1", key_id)
    key, secret = await key_store.create_key(pool, name=f"Eval dev {site.name}", key_id=key_id)
    indexing = Indexing(pool)
    chunks = 0
    for url, file in _site_pages(site):
        page = extract_html(file.read_text(), url)
        if page.noindex:
            continue
        pieces = [NewChunk(c) for c in dict.fromkeys(chunk_page(page)) if c.strip()]
        if pieces:
            await indexing.write(key.id, "page", url, page.title, url, pieces)
            chunks += len(pieces)
    print(f"  {site.name}: indexed {chunks} chunks")
    return key.id, secret


async def demo(pool: asyncpg.Pool, planner: Planner) -> None:
    """The demo set (tests/search/eval_demo.json) over the demo knowledge, through Plan, as the bench does."""
    from services.launcher import REPO  # noqa: PLC0415

    await pool.execute("DELETE FROM product_keys WHERE id = 'evaldev-demo'")
    key, secret = await key_store.create_key(pool, name="Eval dev demo", key_id="evaldev-demo")
    indexing = Indexing(pool)
    for f in sorted((REPO / "deploy" / "local" / "demo").rglob("*")):
        if f.suffix == ".json":
            for entry in json.loads(f.read_text()).get("faq", []):
                await add_faq(indexing, key.id, entry["question"], entry["answer"])
        elif f.suffix in (".md", ".txt"):
            text = f.read_text()
            title = next((line.lstrip("# ").strip() for line in text.splitlines() if line.strip()), f.stem)
            await add_document(indexing, key.id, title, text, f"doc:{f.name}")
    outcomes = []
    for case in load_cases(REPO / "tests" / "search" / "eval_demo.json"):
        d = (await planner.plan(secret, case.question, max_passages=3)).decision
        outcomes.append(Outcome(case, d.strategy, [Hit(c.kind, c.title or c.question, c.content if c.kind != "faq"
                                                       else f"{c.question}\n{c.content}", c.url) for c in d.chunks]))
    report = evaluate(outcomes)
    print(f"demo set: hit@1 {report.hit_at_1:.3f} hit@3 {report.hit_at_3:.3f} MRR {report.mrr:.3f} "
          f"strategy accuracy {report.strategy_accuracy:.3f}")
    for miss in report.misses:
        print("  not in the top 3:", miss)
    for o in outcomes:
        if o.strategy != o.case.strategy:
            print(f"  expected {o.case.strategy}, chose {o.strategy}: {o.case.question!r}")


def _answer(answerer: ExtractiveAnswerer, text: str, decision) -> tuple[str, str]:
    strategy = decision.strategy
    passages = [PassageText(c.id, c.kind, c.title or c.question,
                            c.content if c.kind != "faq" else f"{c.question}\n{c.content}", c.score)
                for c in decision.chunks]
    if strategy in ("GREETING", "SMALLTALK"):
        return strategy, smalltalk_reply(text, "")
    if strategy == "FAQ":
        return strategy, decision.faq_answer
    answer = answerer.answer(AnswerRequest(text, "", "", strategy, passages))
    if strategy == "KNOWLEDGE" and not answer.cited:
        strategy = "NO_ANSWER"
    return strategy, answer.text


async def run(args: argparse.Namespace) -> dict:
    settings = Settings()
    pool = await asyncpg.create_pool(settings.postgres_dsn, min_size=1, max_size=4)
    client = redis.from_url(settings.redis_url)
    dense = await DenseRetrieval.load(pool, settings.vector_index_max_bytes, settings.dense_candidates)
    planner = Planner(settings, pool, client, dense=dense)
    answerer = ExtractiveAnswerer(settings.extractive_max_sentences, min_similarity=settings.extractive_min_similarity,
                                  passages=settings.extractive_passages)
    secrets = json.loads(_SECRETS.read_text()) if _SECRETS.exists() else {}
    sites = [s for s in discover() if s.root is not None and (not args.sites or s.name in args.sites.split(","))
             and any(q.split == "dev" for q in s.questions)]   # a site all in the test split is never indexed here
    out: dict = {}
    try:
        if args.demo:
            await demo(pool, planner)
            sites = [s for s in sites if args.sites]
        for site in sites:
            # (chunks embedded by another model, or other sentence rules, are indexed again)
            exists = await pool.fetchval("SELECT count(*) FROM knowledge_chunks WHERE product_key_id = $1"
                                         " AND embedding_model = $2", f"evaldev-{site.name}", dense.index.model_id)
            if args.reindex or site.name not in secrets or not exists:
                _, secrets[site.name] = await _index(pool, site)
                _SECRETS.parent.mkdir(exist_ok=True)
                _SECRETS.write_text(json.dumps(secrets))
            records = []
            started = time.monotonic()
            for q in (q for q in site.questions if q.split == "dev"):
                plan = await planner.plan(secrets[site.name], q.text, max_passages=5)
                d = plan.decision
                strategy, text = _answer(answerer, q.text, d)
                records.append({
                    "id": q.id, "kind": q.kind, "text": q.text, "pages": list(q.pages), "facts": list(q.facts),
                    "plan_strategy": d.strategy, "plan_pages": [page_key(c.url) for c in d.chunks],
                    "scores": d.scores, "strategy": strategy, "answer": text, "reasons": d.reasons,
                    "passages": [{"id": c.id, "kind": c.kind, "title": c.title, "text": c.content, "url": c.url,
                                  "score": c.score, "dense": c.dense} for c in d.chunks],
                })
            out[site.name] = records
            print(f"  {site.name}: {len(records)} dev questions in {time.monotonic() - started:.1f}s")
    finally:
        await client.aclose()
        await pool.close()
    return out


def _asked(r: dict) -> Asked:
    return Asked(r["kind"], tuple(page_key(p) for p in r["pages"]), tuple(r["facts"]), tuple(r["plan_pages"]),
                 r["strategy"], r["answer"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", default="")
    parser.add_argument("--out", type=Path, default=None, help="write every dev question's record here")
    parser.add_argument("--reindex", action="store_true", help="index the sites' pages again")
    parser.add_argument("--demo", action="store_true", help="the demo set (and the sites only if --sites names them)")
    args = parser.parse_args(argv)
    by_site = asyncio.run(run(args))
    if not by_site:
        return
    by_site["total"] = [r for records in list(by_site.values()) for r in records]
    print(f"{'dev split':12}" + "".join(f"{c[:12]:>13}" for c in COLUMNS))
    for name, records in by_site.items():
        report = site_report([_asked(r) for r in records])
        print(f"{name:12}" + "".join(f"{report[c]:13.3f}" for c in COLUMNS))
    if args.out:
        args.out.write_text(json.dumps(by_site, indent=1))


if __name__ == "__main__":
    main()
