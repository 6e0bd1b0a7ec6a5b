"""Rendering the kustomize overlays and validating every object against pinned schemas, offline."""

from __future__ import annotations

import copy
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S_DIR = REPO / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
# Kubernetes API version the manifests must be valid for (schemas shipped by kubernetes-validate).
KUBERNETES_VERSION = "1.32.0"
KUSTOMIZE_ENV = "KUSTOMIZE"
DEFAULT_KUSTOMIZE = REPO / ".local" / "bin" / "kustomize"

Doc = dict[str, Any]

# Strimzi's KafkaTopic (kafka.strimzi.io/v1beta2) is a custom resource, absent from the Kubernetes
# schemas: the fields Parley sets, with the types and bounds of Strimzi's CRD.
KAFKA_TOPIC_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "kafka.strimzi.io/v1beta2"},
        "kind": {"const": "KafkaTopic"},
        "metadata": {
            "type": "object",
            "required": ["name", "labels"],
            "properties": {
                "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253},
                "namespace": {"type": "string"},
                "labels": {
                    "type": "object",
                    "required": ["strimzi.io/cluster"],
                    "additionalProperties": {"type": "string"},
                },
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {
            "type": "object",
            "required": ["topicName", "partitions", "replicas", "config"],
            "additionalProperties": False,
            "properties": {
                "topicName": {"type": "string", "pattern": r"^[a-zA-Z0-9._-]{1,249}$"},
                "partitions": {"type": "integer", "minimum": 1},
                "replicas": {"type": "integer", "minimum": 1, "maximum": 32767},
                "config": {"type": "object", "additionalProperties": {"type": ["string", "integer", "boolean"]}},
            },
        },
    },
}
# KEDA's ScaledObject: the openAPIV3Schema of KEDA's own CRD (tests/deploy/schemas, copied from
# config/crd/bases of the Go module github.com/kedacore/keda/v2 at KEDA_VERSION of
# deploy/kube/tools/versions.env), made strict the way the API server's strict field validation is.
KEDA_CRD = Path(__file__).parent / "schemas" / "keda.sh_scaledobjects.yaml"


def strict_crd_schema(crd: Doc, version: str) -> dict[str, Any]:
    """The CRD's schema of `version`, refusing unknown fields wherever it lists properties (as the
    server does with fieldValidation=Strict), OpenAPI's `nullable` mapped to JSON Schema."""

    def strict(node: Any) -> Any:
        if isinstance(node, list):
            return [strict(n) for n in node]
        if not isinstance(node, dict):
            return node
        out = {k: strict(v) for k, v in node.items() if not k.startswith("x-kubernetes-") and k != "nullable"}
        if node.get("nullable") and "type" in out:
            out["type"] = [out["type"], "null"]
        if "properties" in node and "additionalProperties" not in node and not node.get(
                "x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out

    schema = next(v for v in crd["spec"]["versions"] if v["name"] == version)["schema"]["openAPIV3Schema"]
    schema = strict(schema)
    schema["properties"]["metadata"] = {"type": "object"}
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata", "spec"})
    return schema


CUSTOM_SCHEMAS = {
    ("kafka.strimzi.io/v1beta2", "KafkaTopic"): KAFKA_TOPIC_SCHEMA,
    ("keda.sh/v1alpha1", "ScaledObject"): strict_crd_schema(yaml.safe_load(KEDA_CRD.read_text()), "v1alpha1"),
}


class KustomizeMissing(RuntimeError):
    pass


def kustomize_binary() -> Path:
    """The kustomize that `make kustomize` installs, or the one named by $KUSTOMIZE."""
    path = Path(os.environ.get(KUSTOMIZE_ENV) or DEFAULT_KUSTOMIZE)
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise KustomizeMissing(
            f"kustomize not found at {path}: run `make kustomize` (go install of the pinned version into "
            f".local/bin; `make test` does it) or set {KUSTOMIZE_ENV}=/path/to/kustomize"
        )
    return path


def kustomize_build(directory: Path) -> list[Doc]:
    result = subprocess.run(
        [str(kustomize_binary()), "build", str(directory)], capture_output=True, text=True, timeout=60
    )
    if result.returncode != 0:
        raise RuntimeError(f"kustomize build {directory} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def name_of(doc: Doc) -> str:
    return f"{doc['kind']} {doc['metadata']['name']}"


def schema_errors(docs: list[Doc], version: str = KUBERNETES_VERSION) -> list[str]:
    """Every object against the strict Kubernetes OpenAPI schemas of `version` (custom resources
    against CUSTOM_SCHEMAS); an object of a kind with no schema is an error too."""
    errors = []
    for doc in docs:
        custom = CUSTOM_SCHEMAS.get((doc.get("apiVersion"), doc.get("kind")))
        try:
            if custom is not None:
                jsonschema.Draft202012Validator(custom).validate(doc)
            else:
                kubernetes_validate.validate(copy.deepcopy(doc), version, strict=True)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as exc:
            path = ".".join(str(p) for p in exc.path)
            errors.append(f"{name_of(doc)}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(f"{name_of(doc)}: {exc.message}")
    return errors


@dataclass
class Rendered:
    overlay: str
    docs: list[Doc]

    def of_kind(self, kind: str) -> list[Doc]:
        return [d for d in self.docs if d["kind"] == kind]
