"""Each overlay rendered once per session by the pinned kustomize (`make kustomize`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import yaml

from tests.deploy.manifests import K8S_DIR, OVERLAYS, KustomizeMissing, Rendered, kustomize_build


class RenderedOverlays:
    """overlay name -> Rendered, built on first use; a missing kustomize or a build error fails
    the test that needed it with kustomize's own message."""

    def __init__(self) -> None:
        self._cache: dict[str, Rendered] = {}

    def __getitem__(self, overlay: str) -> Rendered:
        if overlay not in self._cache:
            try:
                self._cache[overlay] = Rendered(overlay, kustomize_build(K8S_DIR / "overlays" / overlay))
            except (KustomizeMissing, RuntimeError) as exc:
                pytest.fail(str(exc), pytrace=False)
        return self._cache[overlay]

    def values(self) -> Iterator[Rendered]:
        return (self[name] for name in OVERLAYS)


@pytest.fixture(scope="session")
def rendered() -> RenderedOverlays:
    return RenderedOverlays()


@pytest.fixture(scope="session")
def secret_example() -> dict:
    return yaml.safe_load((K8S_DIR / "secret.example.yaml").read_text())


@pytest.fixture(scope="session")
def secret_keys(secret_example) -> set[str]:
    return set(secret_example["stringData"])
