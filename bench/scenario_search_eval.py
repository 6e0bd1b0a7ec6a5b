"""Scenario "search-eval": retrieval quality of Plan over the demo knowledge (tests/search/eval_demo.json):
hit@1, hit@3, MRR, FAQ precision and the strategy confusion table, through the real gRPC path."""

from __future__ import annotations

from rich.table import Table

from bench.harness import console, started_services
from services.common.grpc_server import channel
from services.common.pb.parley.v1 import common_pb2, search_pb2, search_pb2_grpc
from services.launcher import REPO
from services.search.evaluation import STRATEGIES, Hit, Outcome, evaluate, load_cases

NAME = "search-eval"
EVAL_SET = REPO / "tests" / "search" / "eval_demo.json"


async def run(seconds: float, concurrencies: list[int]) -> dict:
    cases = load_cases(EVAL_SET)
    # The evaluation asks its questions back to back: lift the per-key rate limit for this run.
    unlimited = {"PARLEY_RATE_LIMIT_PER_SECOND": "100000", "PARLEY_RATE_LIMIT_BURST": "100000"}
    async with started_services(unlimited) as (settings, _key_id, secret):
        async with channel(settings.search_addr) as ch:
            stub = search_pb2_grpc.SearchServiceStub(ch)
            outcomes = []
            for case in cases:
                reply = await stub.Plan(
                    search_pb2.PlanRequest(product_key=secret, message=case.question, max_passages=3), timeout=10
                )
                strategy = common_pb2.Strategy.Name(reply.strategy).removeprefix("STRATEGY_")
                outcomes.append(Outcome(case, strategy, [Hit(p.kind, p.title, p.text, p.url) for p in reply.passages]))
    report = evaluate(outcomes)
    summary = Table("questions", "answerable", "hit@1", "hit@3", "MRR", "strategy accuracy", "FAQ precision",
                    title=f"retrieval quality over {EVAL_SET.relative_to(REPO)} (knowledge_min_score="
                          f"{settings.knowledge_min_score:g}, faq_min_score={settings.faq_min_score:g})")
    summary.add_row(str(len(cases)), str(report.answerable), f"{report.hit_at_1:.3f}", f"{report.hit_at_3:.3f}",
                    f"{report.mrr:.3f}", f"{report.strategy_accuracy:.3f}", f"{report.faq_precision:.3f}")
    console.print(summary)
    chosen = [s for s in STRATEGIES if any(s in row for row in report.confusion.values())]
    confusion = Table("expected \\ chosen", *chosen, title="strategy confusion (rows: expected, columns: chosen)")
    for expected in STRATEGIES:
        row = report.confusion.get(expected)
        if row:
            confusion.add_row(expected, *[str(row.get(s, 0)) or "" for s in chosen])
    console.print(confusion)
    for miss in report.misses:
        console.print(f"  not in the top 3: {miss}")
    return {"scenario": NAME, **report.as_dict()}
