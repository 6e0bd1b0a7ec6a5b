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

echo "==> local stack"
$PY -m deploy.local up
echo "==> tests"
set +e
$PY -m pytest -ra --durations=10 "$@"
rc=$?
set -e
exit $rc
