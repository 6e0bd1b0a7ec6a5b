#!/usr/bin/env bash
# `make test`: start the local stack (installing what is missing), run every test, stop what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python

already_up=0
if $PY -m deploy.local -q status >/dev/null 2>&1; then
  already_up=1
fi
cleanup() {
  if [ "$already_up" = 0 ]; then
    echo "==> stopping the local stack"
    $PY -m deploy.local down || true
  fi
}
trap cleanup EXIT

# The live Kubernetes stage's tools (a control plane built from the Go module proxy: minutes on a
# bare machine, seconds once built) are built in the background while the other tests run; that
# stage runs last and waits for them (tests/deploy/live/conftest.py).
mkdir -p .local/logs
export PARLEY_K8S_TOOLS_STATUS=.local/logs/k8s-tools.status
rm -f "$PARLEY_K8S_TOOLS_STATUS"
echo "==> k8s-tools: building in the background (log: .local/logs/k8s-tools.log)"
( set +e; bash deploy/kube/tools/build.sh >.local/logs/k8s-tools.log 2>&1; echo $? >"$PARLEY_K8S_TOOLS_STATUS" ) &
tools_build=$!
# So is the container image (a debootstrap base once, then `buildah bud`: minutes), which the image
# test waits for (tests/deploy/live/test_image.py) instead of building it when its turn comes.
export PARLEY_IMAGE_BUILD_STATUS=.local/logs/image.status
rm -f "$PARLEY_IMAGE_BUILD_STATUS"
echo "==> image: building in the background (log: .local/logs/image.log)"
( set +e; $PY -m deploy.kube.image build >.local/logs/image.log 2>&1; echo $? >"$PARLEY_IMAGE_BUILD_STATUS" ) &
image_build=$!

echo "==> local stack"
$PY -m deploy.local up
echo "==> tests"
set +e
$PY -m pytest -ra --durations=10 "$@"
rc=$?
wait "$tools_build" "$image_build" || true  # finished already when the live stage ran
set -e
exit $rc
