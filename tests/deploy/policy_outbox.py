"""Policy of the event outboxes: a component that holds acknowledged events in an outbox keeps it on
a PersistentVolumeClaim of its own per replica, never on an emptyDir; and the StatefulSet that gives
it those claims scales as fast as a Deployment and keeps them when it scales down.

An outbox (services/common/outbox.py) holds events whose call was already answered: a chat turn or a
feedback the caller was told is recorded, waiting there while Kafka is away. An emptyDir goes with its
pod (a rolling update, an autoscaler's scale-down, an eviction, a drained node) and every undelivered
event with it. Which components hold an outbox is read from the code (`Outbox(` in a component's
modules), so a component that starts keeping one fails this check until its manifest keeps it too.
"""

from __future__ import annotations

import posixpath
import re
from typing import Any

from services.settings import Settings
from tests.deploy.policy_network import component_sources

Doc = dict[str, Any]

_OUTBOX = re.compile(r"\bOutbox\(")
# A claim holds at least this many times PARLEY_OUTBOX_MAX_BYTES: the rest is for SQLite's pages and
# WAL and the filesystem's own share (ext4 keeps 5 % for root; the services run as uid 10001).
OUTBOX_HEADROOM = 1.5
_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def outbox_holders_in_code(modules: tuple[str, ...]) -> set[str]:
    """The component modules whose code opens an outbox."""
    return {m for m in modules if any(_OUTBOX.search(p.read_text()) for p in component_sources(m, modules))}


def quantity_bytes(quantity: str | int) -> float:
    match = re.fullmatch(r"([0-9.]+)([kMGT]i?)?", str(quantity))
    if not match:
        raise ValueError(f"not a storage quantity: {quantity!r}")
    return float(match.group(1)) * _UNITS[match.group(2) or ""]


def container_env(container: Doc) -> dict[str, str]:
    """The container's own `env` values (they override the ConfigMap's)."""
    return {e["name"]: str(e["value"]) for e in container.get("env") or [] if "value" in e}


def _mount_of(container: Doc, path: str) -> Doc | None:
    """The volume mount whose path holds `path` (the deepest one), or None."""
    path = posixpath.normpath(path)
    holding = [m for m in container.get("volumeMounts") or []
               if path == posixpath.normpath(m["mountPath"])
               or path.startswith(posixpath.normpath(m["mountPath"]).rstrip("/") + "/")]
    return max(holding, key=lambda m: len(m["mountPath"]), default=None)


def statefulset_violations(sts: Doc, services: list[Doc], autoscaled: bool) -> list[str]:
    """What every StatefulSet needs: its governing headless Service, and, when an autoscaler owns its
    count, pods started and stopped side by side."""
    found: list[str] = []
    out = found.append
    where = f"StatefulSet {sts['metadata']['name']}"
    spec = sts["spec"]
    labels = spec["template"]["metadata"].get("labels") or {}
    governing = next((s for s in services if s["metadata"]["name"] == spec.get("serviceName")), None)
    if governing is None:
        out(f"{where}: serviceName {spec.get('serviceName')!r} names no Service (its governing headless Service)")
    else:
        if governing["spec"].get("clusterIP") != "None":
            out(f"{where}: its governing Service {governing['metadata']['name']} must be headless (clusterIP: None)")
        selector = governing["spec"].get("selector") or {}
        if not selector or not all(labels.get(k) == v for k, v in selector.items()):
            out(f"{where}: its governing Service {governing['metadata']['name']} does not select its pods")
    if autoscaled and spec.get("podManagementPolicy") != "Parallel":
        out(f"{where}: podManagementPolicy must be Parallel (is {spec.get('podManagementPolicy', 'OrderedReady')}): "
            "its autoscaler adds and removes pods one ordinal at a time otherwise")
    return found


def outbox_violations(workload: Doc, container: Doc, module: str, settings: Settings) -> list[str]:
    """A workload running `module`, which holds an outbox; `settings` as its container sees them."""
    found: list[str] = []
    out = found.append
    kind, name = workload["kind"], workload["metadata"]["name"]
    where = f"{kind} {name}"
    spec = workload["spec"]
    if kind != "StatefulSet":
        return [f"{where} runs `python -m {module}`, which holds acknowledged events in its outbox: run it as a "
                "StatefulSet whose volumeClaimTemplates give each replica a PersistentVolumeClaim for "
                "PARLEY_OUTBOX_DIR (a Deployment's replicas cannot each keep their own)"]
    directory = settings.outbox_dir
    mount = _mount_of(container, directory) if posixpath.isabs(directory) else None
    if mount is None:
        return [f"{where}: PARLEY_OUTBOX_DIR {directory!r} is on no volume (the root filesystem is read-only, "
                "and the outbox must outlive the pod)"]
    if mount.get("readOnly"):
        out(f"{where}: the volume {mount['name']} of PARLEY_OUTBOX_DIR is mounted read-only")
    volume = next((v for v in spec["template"]["spec"].get("volumes") or [] if v["name"] == mount["name"]), None)
    claim = next((c for c in spec.get("volumeClaimTemplates") or [] if c["metadata"]["name"] == mount["name"]), None)
    if volume is not None and "emptyDir" in volume:
        out(f"{where}: keeps its outbox (PARLEY_OUTBOX_DIR {directory}) on the emptyDir {mount['name']}: a deleted "
            "pod loses every undelivered acknowledged event; use a volumeClaimTemplate")
    elif volume is not None:
        out(f"{where}: keeps its outbox on the pod volume {mount['name']}, not on a PersistentVolumeClaim of its "
            "own per replica (volumeClaimTemplates)")
    elif claim is None:
        out(f"{where}: the volume {mount['name']} of PARLEY_OUTBOX_DIR is neither a volume nor a volumeClaimTemplate")
    else:
        cspec = claim.get("spec") or {}
        if "ReadWriteOnce" not in (cspec.get("accessModes") or []):
            out(f"{where}: the outbox claim {mount['name']} must be ReadWriteOnce (one writer: its replica)")
        size = ((cspec.get("resources") or {}).get("requests") or {}).get("storage")
        needed = OUTBOX_HEADROOM * settings.outbox_max_bytes
        if size is None or quantity_bytes(size) < needed:
            out(f"{where}: the outbox claim {mount['name']} requests {size} < {OUTBOX_HEADROOM:g} x "
                f"PARLEY_OUTBOX_MAX_BYTES ({settings.outbox_max_bytes}) = {needed / 2**20:.0f}Mi: SQLite's pages and "
                "WAL and the filesystem need room beyond the events")
    retention = spec.get("persistentVolumeClaimRetentionPolicy") or {}
    for when in ("whenScaled", "whenDeleted"):
        if retention.get(when, "Retain") != "Retain":
            out(f"{where}: persistentVolumeClaimRetentionPolicy.{when} {retention[when]} deletes the claims with "
                "their undelivered events; Retain keeps them until that ordinal delivers them")
    return found
