#!/usr/bin/env bash
# Runs every check CI runs: environment, generated files, lint, types, layer contracts, tests.
#
#   scripts/test.sh                 # everything
#   scripts/test.sh tests/unit -k gate   # extra arguments go to pytest
#
# The first run on a new machine downloads the Python environment (several GB, cached in
# ~/.cache/docmodel/uv) and builds the local control plane, MinIO, Helm and the Argo CD
# health-script runner from Go modules (cached in ~/.cache/docmodel/bin), and the container images
# with Podman (installed with apt when missing; about 4 minutes, kept in Podman's storage); later
# runs reuse all of it. DOCMODEL_TEST_IMAGES=0 skips the images (their tests then skip too).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

step() { printf '\n==> %s\n' "$*" >&2; }

step "Python environment"
scripts/setup-env.sh
py=.venv/bin/python

step "CRD is in sync with the API models"
$py -m docmodel.crd --check

step "Lint (ruff)"
.venv/bin/ruff check .
.venv/bin/ruff format --check .

step "Types (mypy)"
.venv/bin/mypy

step "Layer contracts (import-linter)"
.venv/bin/lint-imports

if [ -d devenv/docmodel_devenv ] && [ -f devenv/docmodel_devenv/__main__.py ]; then
  step "Control plane, kwok, MinIO, Helm and the Argo CD health runner (built once, cached)"
  $py -m docmodel_devenv build
fi

if [ "${DOCMODEL_TEST_IMAGES:-1}" != 0 ]; then
  step "Container images: a Debian base, the operator, the trainer and the server (Podman; built once, reused while their inputs are unchanged)"
  $py -m docmodel_devenv images
fi

step "Tests"
exec $py -m pytest "$@"
