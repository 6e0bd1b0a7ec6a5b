"""Retrieval quality over the demo knowledge through the real Plan RPC: the evaluation set's goals."""

from __future__ import annotations

from pathlib import Path

from services.cli import DEMO_DIR, add_knowledge_path
from services.common.pb.parley.v1 import common_pb2, search_pb2
from services.search.evaluation import Hit, Outcome, evaluate, load_cases
from tests.conftest import RUN_ID

EVAL_SET = Path(__file__).with_name("eval_demo.json")


async def test_demo_evaluation_meets_the_goals(search, admin, settings):
    created = await search.CreateProductKey(
        search_pb2.CreateProductKeyRequest(name="Eval", id=f"t-{RUN_ID}-srch-eval",
                                         settings=search_pb2.KeySettings(rate_limit_per_second=1000, rate_limit_burst=1000)),
        metadata=admin, timeout=10,
    )
    await add_knowledge_path(settings, created.key.id, DEMO_DIR)
    cases = load_cases(EVAL_SET)
    assert len([c for c in cases if c.sources]) >= 50
    outcomes = []
    for case in cases:
        reply = await search.Plan(
            search_pb2.PlanRequest(product_key=created.product_key, message=case.question, max_passages=3), timeout=10
        )
        strategy = common_pb2.Strategy.Name(reply.strategy).removeprefix("STRATEGY_")
        outcomes.append(Outcome(case, strategy, [Hit(p.kind, p.title, p.text, p.url) for p in reply.passages]))
        if strategy == "FAQ":
            assert reply.faq_answer and reply.passages[0].kind == "faq"
        assert reply.reasons and set(reply.scores) >= ({"relevance", "faq", "fused"} if case.sources else set())
    report = evaluate(outcomes)
    # The demo set answers every question today (hit@3 1.000, strategy accuracy 0.984): it guards the
    # decision against regressions, so one miss at most (a NO_ANSWER rule that refused three demo
    # questions, hit@3 0.944 and accuracy 0.938, got through the goals of 0.9 alone).
    assert report.hit_at_3 >= 0.98, report.misses
    assert report.strategy_accuracy >= 0.95, report.confusion
    assert report.faq_precision >= 0.9, report.confusion
    assert report.confusion["NO_ANSWER"] == {"NO_ANSWER": report.confusion["NO_ANSWER"].get("NO_ANSWER", -1)}
