"""Policy of the NetworkPolicies: every component is reachable only by the callers its code has,
and its metrics port only by Prometheus.

Who calls whom is read from the code (`channel(settings.<service>_addr)` in each component's
modules), so a new call without a policy, or a policy without a call, fails the check.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

Doc = dict[str, Any]

REPO = Path(__file__).resolve().parents[2]
NAME = "app.kubernetes.io/name"
# Callers from outside the namespace, by pod label: Prometheus scrapes every metrics port; the API
# gateway (pods labelled parley-api-client: "true") reaches the public services; admin pods
# (parley-admin: "true", same namespace) run the `parley` command line.
PROMETHEUS = {NAME: "prometheus"}
GATEWAY = {"parley-api-client": "true"}
ADMIN = {"parley-admin": "true"}
PUBLIC_MODULES = ("services.response", "services.analytics")
ADDR_FIELDS = {"search_addr": "services.search", "response_addr": "services.response",
               "scraper_addr": "services.scraper", "analytics_addr": "services.analytics"}
_CALL = re.compile(r"channel\(\s*settings\.(\w+_addr)\b")


def component_sources(module: str, all_modules: tuple[str, ...]) -> list[Path]:
    """The files of `module`: its package (less the other components' files) or its .py file."""
    base = REPO / Path(*module.split("."))
    if not base.is_dir():
        return [base.with_suffix(".py")]
    others = [REPO / Path(*m.split(".")) for m in all_modules if m != module and m.startswith(module + ".")]
    return [p for p in base.rglob("*.py")
            if not any(p == o.with_suffix(".py") or o in p.parents for o in others)]


def callers_in_code(modules: tuple[str, ...]) -> dict[str, set[str]]:
    """gRPC server module -> the modules whose code opens a channel to it (services.cli included)."""
    callers: dict[str, set[str]] = {m: set() for m in ADDR_FIELDS.values()}
    for module in (*modules, "services.cli"):
        for path in component_sources(module, modules):
            for field in _CALL.findall(path.read_text()):
                if field in ADDR_FIELDS:
                    callers[ADDR_FIELDS[field]].add(module)
    return callers


def _selects(selector: Doc, labels: dict[str, str]) -> bool:
    wanted = selector.get("matchLabels") or {}
    return not selector.get("matchExpressions") and all(labels.get(k) == v for k, v in wanted.items())


def _peer(peer: Doc) -> str:
    """A readable name of a NetworkPolicy peer, or 'anything' when it is not a plain pod selector."""
    if "ipBlock" in peer or "podSelector" not in peer or not (peer["podSelector"].get("matchLabels")):
        return "anything"
    labels = peer["podSelector"]["matchLabels"]
    scope = "any namespace" if "namespaceSelector" in peer else "namespace"
    if peer.get("namespaceSelector") not in (None, {}):
        scope = "some namespaces"
    return f"{scope}:{','.join(f'{k}={v}' for k, v in sorted(labels.items()))}"


def _label_peer(labels: dict[str, str], scope: str) -> str:
    return f"{scope}:{','.join(f'{k}={v}' for k, v in sorted(labels.items()))}"


def allowed(policies: list[Doc], labels: dict[str, str]) -> dict[str, set[str]]:
    """Port (name or number, 'all ports') -> peers allowed to reach a pod with `labels`."""
    ports: dict[str, set[str]] = {}
    for np in policies:
        spec = np["spec"]
        if "Ingress" not in spec.get("policyTypes", ["Ingress"]) or not _selects(spec.get("podSelector") or {}, labels):
            continue
        for rule in spec.get("ingress") or []:
            peers = {_peer(p) for p in rule.get("from") or []} or {"anything"}
            for port in rule.get("ports") or [{"port": "all ports"}]:
                ports.setdefault(str(port.get("port", "all ports")), set()).update(peers)
    return ports


def network_violations(workloads: list[Doc], policies: list[Doc], module_of) -> list[str]:
    """`module_of(workload)` gives the `python -m` module a Deployment or StatefulSet runs (or None)."""
    found: list[str] = []
    out = found.append
    if not any(_selects(np["spec"].get("podSelector") or {}, {}) and not np["spec"].get("ingress")
               and "Ingress" in np["spec"].get("policyTypes", []) for np in policies):
        out("no default-deny NetworkPolicy (podSelector {}, policyTypes [Ingress], no rules)")
    by_module = {module_of(d): d for d in workloads}
    callers = callers_in_code(tuple(m for m in by_module if m))
    prometheus = _label_peer(PROMETHEUS, "any namespace")
    for module, dep in by_module.items():
        if module is None:
            continue
        name = f"{dep['kind']} {dep['metadata']['name']}"
        labels = dep["spec"]["template"]["metadata"].get("labels") or {}
        ports = allowed(policies, labels)
        if not ports:
            out(f"{name}: no NetworkPolicy lets Prometheus reach its metrics port")
            continue
        for port, peers in ports.items():
            if "anything" in peers or port == "all ports":
                out(f"{name}: port {port} is open to {sorted(peers)}; name each caller and port")
        if ports.get("metrics", set()) != {prometheus}:
            out(f"{name}: metrics port reachable by {sorted(ports.get('metrics', set()))}, "
                f"only Prometheus ({prometheus}) may")
        expected = set()
        if module in callers:
            expected = {_label_peer({NAME: by_module[c]["metadata"]["name"]}, "namespace")
                        for c in callers[module] if c in by_module}
            if "services.cli" in callers[module]:
                expected.add(_label_peer(ADMIN, "namespace"))
            if module in PUBLIC_MODULES:
                expected.add(_label_peer(GATEWAY, "any namespace"))
        got = ports.get("grpc", set())
        if got != expected:
            out(f"{name}: gRPC reachable by {sorted(got)}; its callers in the code are {sorted(expected)}")
        for port in set(ports) - {"grpc", "metrics"}:
            out(f"{name}: port {port} is open to {sorted(ports[port])} but serves no caller")
    return found
