"""Scenario "search-eval": answer quality on help sites written apart from their questions, and on the demo set.

Each site of bench/eval/ (and the bundled sample site) is served on 127.0.0.1, crawled into its own
product key through the real crawl path (StartCrawl, crawl worker, indexing), and every question is
asked through Plan (the ranking: hit@1, hit@3, MRR) and ResponseService.Chat with the extractive
answerer (fact in the answer, NO_ANSWER, small talk). Reported per site and in total, for the dev
split (where thresholds are chosen) and the test split (held back) apart; then the demo set
(tests/search/eval_demo.json) as before, and the lexical overlap of questions with their pages.
Every question's scores are written with the results, so thresholds can be chosen on dev offline
(bench/eval_tune.py).
"""

from __future__ import annotations

import asyncio
import os
import uuid

from rich.table import Table

from bench.eval_sites import EvalSite, Question, StaticSite, discover, page_key
from bench.harness import console, started_services
from services.cli import create_key, ingest
from services.common.admin import admin_metadata
from services.common.grpc_server import channel
from services.common.pb.parley.v1 import common_pb2, response_pb2, response_pb2_grpc, search_pb2, search_pb2_grpc
from services.launcher import REPO
from services.search.evaluation import STRATEGIES, Asked, Hit, Outcome, evaluate, load_cases, site_report

NAME = "search-eval"
EVAL_SET = REPO / "tests" / "search" / "eval_demo.json"
COLUMNS = [("hit_at_1", "hit@1"), ("hit_at_3", "hit@3"), ("mrr", "MRR"), ("fact_in_answer", "fact in answer"),
           ("answerable_no_answer", "answerable→NO_ANSWER"), ("no_answer_precision", "NO_ANSWER P"),
           ("no_answer_recall", "NO_ANSWER R"), ("smalltalk_accuracy", "small talk")]
ENV = {
    # The evaluation asks its questions back to back: lift the per-key rate limit for this run.
    "PARLEY_RATE_LIMIT_PER_SECOND": "100000", "PARLEY_RATE_LIMIT_BURST": "100000",
    # The sites are served on 127.0.0.1, which the crawler refuses unless allow-listed.
    "PARLEY_SCRAPER_ALLOW_NETWORKS": "127.0.0.1/32", "PARLEY_SCRAPER_HOST_DELAY_SECONDS": "0",
}


def _strategy(value: int) -> str:
    return common_pb2.Strategy.Name(value).removeprefix("STRATEGY_")


async def _load_site(settings, site: EvalSite) -> tuple[str, str]:
    """A new key with the site crawled into it: (key id, secret)."""
    key = await create_key(settings, f"Eval {site.name}", f"eval-{site.name}-{uuid.uuid4().hex[:6]}")
    if site.root is None:
        from deploy.local.sample_site.server import SampleSite  # noqa: PLC0415
        server = SampleSite(slow_seconds=0.1)
    else:
        server = StaticSite(site.root)
    base = await server.start()
    try:
        status = await ingest(settings, key.key.id, base + "/", sitemap=base + "/sitemap.xml", max_pages=500,
                              timeout=600)
        console.print(f"  {site.name}: {status.pages_fetched} page(s), {status.chunks_written} chunk(s)")
    finally:
        await server.stop()
    return key.key.id, key.product_key


async def _ask(settings, secret: str, questions: list[Question], in_flight: int = 4) -> list[dict]:
    """Every question through Plan and Chat, a few at a time (each answer is independent: no cache, own session)."""
    gate = asyncio.Semaphore(in_flight)
    async with channel(settings.search_addr) as sch, channel(settings.response_addr) as rch:
        search = search_pb2_grpc.SearchServiceStub(sch)
        chat = response_pb2_grpc.ResponseServiceStub(rch)
        platform = admin_metadata(settings.admin_token)   # Plan as the response service calls it

        async def one(q: Question) -> dict:
            async with gate:
                plan = await search.Plan(search_pb2.PlanRequest(product_key=secret, message=q.text, max_passages=5),
                                         timeout=60, metadata=platform)
                reply = await chat.Chat(response_pb2.ChatRequest(product_key=secret, session_id=f"eval-{q.id}",
                                                                 message=q.text, no_cache=True), timeout=120)
            return {
                "id": q.id, "split": q.split, "kind": q.kind, "text": q.text, "pages": list(q.pages),
                "facts": list(q.facts), "plan_strategy": _strategy(plan.strategy),
                "plan_pages": [page_key(p.url) for p in plan.passages], "scores": dict(plan.scores),
                "strategy": _strategy(reply.strategy), "answer": reply.answer,
                "sources": [page_key(s.url) for s in reply.sources],
                # What bench/eval_tune.py needs to replay the answer offline with other thresholds.
                "passages": [{"id": p.id, "kind": p.kind, "title": p.title, "text": p.text, "url": p.url,
                              "score": p.score} for p in plan.passages] if q.split == "dev" else [],
            }

        return list(await asyncio.gather(*(one(q) for q in questions)))


def _asked(r: dict) -> Asked:
    return Asked(r["kind"], tuple(page_key(p) for p in r["pages"]), tuple(r["facts"]), tuple(r["plan_pages"]),
                 r["strategy"], r["answer"])


def _table(title: str, rows: dict[str, list[dict]]) -> tuple[Table, dict]:
    table = Table("site", "n (ans/unans/small)", *[c[1] for c in COLUMNS], title=title)
    out = {}
    for name, records in rows.items():
        report = site_report([_asked(r) for r in records])
        out[name] = report
        counts = f"{report['answerable']}/{report['unanswerable']}/{report['smalltalk']}"
        table.add_row(name, counts, *[f"{report[c]:.3f}" for c, _ in COLUMNS])
    return table, out


def _overlap(site: EvalSite, records: list[dict]) -> float:
    """Mean share of an answerable question's content words that its first expected page contains."""
    from services.common.terms import content_terms as terms  # noqa: PLC0415
    from services.scraper.extract import extract_html  # noqa: PLC0415

    root = site.root or REPO / "deploy" / "local" / "sample_site" / "site"
    shares = []
    for r in records:
        if r["kind"] != "answerable" or not r["pages"]:
            continue
        file = root / page_key(r["pages"][0]).lstrip("/")
        if file.is_dir() or not file.suffix:
            file = file / "index.html"
        if not file.is_file():
            continue
        page = extract_html(file.read_text(), "http://SITE/")
        words = terms(r["text"])
        if words:
            shares.append(len(words & terms(page.title + "\n" + page.text)) / len(words))
    return sum(shares) / len(shares) if shares else 0.0


async def _demo(settings, secret: str) -> dict:
    cases = load_cases(EVAL_SET)
    outcomes = []
    async with channel(settings.search_addr) as ch:
        stub = search_pb2_grpc.SearchServiceStub(ch)
        for case in cases:
            reply = await stub.Plan(search_pb2.PlanRequest(product_key=secret, message=case.question, max_passages=3),
                                    timeout=10, metadata=admin_metadata(settings.admin_token))
            outcomes.append(Outcome(case, _strategy(reply.strategy),
                                    [Hit(p.kind, p.title, p.text, p.url) for p in reply.passages]))
    report = evaluate(outcomes)
    summary = Table("questions", "answerable", "hit@1", "hit@3", "MRR", "strategy accuracy", "FAQ precision",
                    title=f"demo set {EVAL_SET.relative_to(REPO)} (Plan)")
    summary.add_row(str(len(cases)), str(report.answerable), f"{report.hit_at_1:.3f}", f"{report.hit_at_3:.3f}",
                    f"{report.mrr:.3f}", f"{report.strategy_accuracy:.3f}", f"{report.faq_precision:.3f}")
    console.print(summary)
    chosen = [s for s in STRATEGIES if any(s in row for row in report.confusion.values())]
    confusion = Table("expected \\ chosen", *chosen, title="demo set: strategy confusion (rows: expected)")
    for expected in STRATEGIES:
        row = report.confusion.get(expected)
        if row:
            confusion.add_row(expected, *[str(row.get(s, 0)) for s in chosen])
    console.print(confusion)
    for miss in report.misses:
        console.print(f"  not in the top 3: {miss}")
    return report.as_dict()


# EVAL_TUNING=1: every threshold of the decision and of the extractive answer at its most permissive,
# so that the dev split's scores and passages can be replayed offline with any thresholds (bench/eval_tune.py).
TUNING_ENV = {"PARLEY_ANSWER_MIN_DENSE": "0", "PARLEY_ANSWER_MIN_SUPPORT": "0", "PARLEY_PASSAGE_MIN_DENSE": "0", "PARLEY_KNOWLEDGE_MIN_SCORE": "0",
              "PARLEY_EXTRACTIVE_MIN_SIMILARITY": "-1"}


async def run(seconds: float, concurrencies: list[int]) -> dict:
    sites = discover()
    if os.environ.get("EVAL_SITES"):   # e.g. EVAL_SITES=trailhead,ledgerloop
        sites = [s for s in sites if s.name in os.environ["EVAL_SITES"].split(",")]
    env = {**ENV, **(TUNING_ENV if os.environ.get("EVAL_TUNING") else {})}
    by_site: dict[str, list[dict]] = {}
    overlap: dict[str, float] = {}
    async with started_services(env) as (settings, _key_id, demo_secret):
        demo = await _demo(settings, demo_secret)
        for site in sites:
            _, secret = await _load_site(settings, site)
            by_site[site.name] = await _ask(settings, secret, site.questions)
            overlap[site.name] = _overlap(site, by_site[site.name])
    result: dict = {"scenario": NAME, "tuning": bool(os.environ.get("EVAL_TUNING")), "demo": demo, "lexical_overlap": overlap, "splits": {}}
    for split in ("dev", "test"):
        rows = {name: [r for r in records if r["split"] == split] for name, records in by_site.items()}
        rows = {name: records for name, records in rows.items() if records}   # a site with none in this split: no row
        rows["total"] = [r for records in rows.values() for r in records]
        table, reports = _table(f"help sites, {split} split (Chat, extractive answerer)", rows)
        console.print(table)
        result["splits"][split] = reports
    console.print("lexical overlap (share of an answerable question's content words on its page): "
                  + ", ".join(f"{k} {v:.2f}" for k, v in overlap.items()))
    for name, records in by_site.items():
        for r in records:
            if r["split"] == "dev" and r["kind"] == "answerable" and r["strategy"] == "NO_ANSWER":
                console.print(f"  dev, {name}: answerable but NO_ANSWER: {r['text']!r}")
    result["questions"] = by_site
    return result
