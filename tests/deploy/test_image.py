"""The one container image: non-root, and the Deployments (and the StatefulSet response) run the commands
the tests run locally."""

from __future__ import annotations

import re

from services.launcher import COMPONENTS as LOCAL_COMPONENTS
from tests.deploy.manifests import REPO
from tests.deploy.policy import COMPONENTS, INIT_COMMANDS, WORKLOAD_KINDS

DOCKERFILE = (REPO / "Dockerfile").read_text()
FINAL_STAGE = DOCKERFILE.rsplit("\nFROM ", 1)[1]


def _deployment_commands(docs):
    for doc in docs:
        if doc["kind"] in WORKLOAD_KINDS:
            spec = doc["spec"]["template"]["spec"]
            for container in spec["containers"] + spec.get("initContainers", []):
                yield doc["metadata"]["name"], container["command"]


def test_image_runs_as_a_numeric_non_root_user_that_the_pods_also_use(rendered):
    users = re.findall(r"^USER\s+(\S+)", FINAL_STAGE, re.M)
    assert users, "the final stage of the Dockerfile sets no USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, "USER must be a numeric non-root uid (runAsNonRoot checks it)"
    for overlay in rendered.values():
        for doc in (d for kind in WORKLOAD_KINDS for d in overlay.of_kind(kind)):
            pod_sc = doc["spec"]["template"]["spec"]["securityContext"]
            assert pod_sc["runAsUser"] == int(uid) and pod_sc["runAsGroup"] == int(gid or uid), doc["metadata"]["name"]


def test_deployments_run_the_local_commands(rendered):
    """Every process the launcher starts locally (make run, the tests) has a Deployment or StatefulSet
    with the same `python -m` command, and every one of them runs a known command."""
    local = {args[-1] for args in LOCAL_COMPONENTS.values()}
    for overlay in rendered.values():
        commands = list(_deployment_commands(overlay.docs))
        modules = {cmd[2] for _, cmd in commands if cmd[:2] == ["python", "-m"] and len(cmd) == 3}
        assert local <= modules, f"not deployed: {local - modules}"
        for name, cmd in commands:
            assert cmd in [list(c) for c in INIT_COMMANDS] or (
                cmd[:2] == ["python", "-m"] and cmd[2] in COMPONENTS
            ), f"{name}: {cmd}"


def test_image_holds_the_code_and_starts_a_service():
    assert re.search(r"^COPY services \./services$", DOCKERFILE, re.M)
    assert re.search(r'^CMD \["python", "-m", "services\.[a-z.]+"\]$', FINAL_STAGE, re.M)
    assert "PYTHONPATH=/app" in FINAL_STAGE


def test_dockerignore_keeps_local_state_out():
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", ".local"} <= ignored
