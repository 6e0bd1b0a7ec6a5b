"""The Grafana dashboard is valid JSON built on metrics that the services and the worker export."""

from __future__ import annotations

import json

from tests.deploy.manifests import K8S_DIR, REPO
from tests.deploy.policy import metric_names

DASHBOARD = K8S_DIR / "base" / "monitoring" / "parley-dashboard.json"


def _exported_metric_names() -> str:
    return "\n".join(p.read_text() for p in (REPO / "services").rglob("*.py") if "/pb/" not in str(p))


def test_dashboard_queries_only_exported_metrics():
    dashboard = json.loads(DASHBOARD.read_text())
    code = _exported_metric_names()
    used: set[str] = set()
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            used |= metric_names(target["expr"])
    missing = sorted(name for name in used if f'"{name}"' not in code)
    assert not missing, f"the dashboard queries metrics no service exports: {missing}"
    assert {"parley_grpc_server_handled_total", "parley_grpc_server_handling_seconds"} <= used
    assert any(name.startswith("parley_worker_") for name in used), "no panel on the stream worker"


def test_dashboard_ships_in_every_overlay(rendered):
    for overlay in rendered.values():
        cm = next(d for d in overlay.of_kind("ConfigMap") if d["metadata"]["name"] == "parley-grafana-dashboard")
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert json.loads(cm["data"]["parley-dashboard.json"])["uid"] == "parley-overview"
