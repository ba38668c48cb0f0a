#!/usr/bin/env bash
# Creates (or reuses) the project's Python environment in ./.venv from requirements.lock.
#
#   scripts/setup-env.sh          # idempotent; prints what it did
#
# Heavy downloads (torch and its CUDA libraries are several GB on PyPI) land once in
# ~/.cache/docmodel/uv, and uv hard-links them into each checkout's .venv, so a
# second checkout or a re-run takes seconds. The environment is re-synced only when
# requirements.lock changes (its hash is stamped into .venv).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${DOCMODEL_CACHE:-$HOME/.cache/docmodel}"
uv_version="0.13.9"
uv_dir="$cache/uv-bin/$uv_version"
export UV_CACHE_DIR="$cache/uv"
export UV_LINK_MODE="${UV_LINK_MODE:-hardlink}"
export UV_PYTHON_DOWNLOADS=never

log() { printf '[setup-env] %s\n' "$*" >&2; }

python_bin=""
for candidate in python3.11 python3.12 python3.13 python3; do
  if command -v "$candidate" >/dev/null 2>&1 \
     && "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
    python_bin="$(command -v "$candidate")"; break
  fi
done
[ -n "$python_bin" ] || { log "Python >= 3.11 is required and none was found on PATH"; exit 1; }

if [ ! -x "$uv_dir/bin/uv" ]; then
  log "Installing uv $uv_version into $uv_dir"
  "$python_bin" -m pip install --quiet --disable-pip-version-check --target "$uv_dir" "uv==$uv_version"
fi
uv="$uv_dir/bin/uv"

lock="$root/requirements.lock"
lock_hash="$(sha256sum "$lock" "$root/pyproject.toml" | sha256sum | cut -c1-16)"
venv="$root/.venv"
stamp="$venv/.docmodel-lock-$lock_hash"

if [ -f "$stamp" ]; then
  log "Environment up to date (.venv, lock $lock_hash)"
  exit 0
fi

if [ ! -x "$venv/bin/python" ]; then
  log "Creating .venv with $python_bin"
  "$uv" venv --quiet --python "$python_bin" "$venv"
fi
log "Syncing .venv with requirements.lock (first run downloads several GB into $UV_CACHE_DIR)"
start=$(date +%s)
"$uv" pip sync --python "$venv/bin/python" "$lock"
"$uv" pip install --quiet --python "$venv/bin/python" --no-deps -e "$root"
rm -f "$venv"/.docmodel-lock-*
touch "$stamp"
log "Environment ready in $(( $(date +%s) - start ))s: $venv"
