"""Each overlay rendered once per session by the pinned kustomize (`make kustomize`)."""

from __future__ import annotations

import pytest
import yaml

from tests.deploy.manifests import K8S_DIR, OVERLAYS, KustomizeMissing, Rendered, kustomize_build


@pytest.fixture(scope="session")
def rendered() -> dict[str, Rendered]:
    try:
        return {name: Rendered(name, kustomize_build(K8S_DIR / "overlays" / name)) for name in OVERLAYS}
    except KustomizeMissing as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def secret_example() -> dict:
    return yaml.safe_load((K8S_DIR / "secret.example.yaml").read_text())


@pytest.fixture(scope="session")
def secret_keys(secret_example) -> set[str]:
    return set(secret_example["stringData"])
