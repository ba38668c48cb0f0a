#!/usr/bin/env bash
# Ready, on a CPU machine with PyPI, what bench/gpu/check.sh needs on the GPU machine (Python
# 3.12, no network): the wheels it lacks, in .whl/ (ignored by git, carried to the machine),
# and the reference scripts the benchmarks compare against, in .whl/reference/.
#
#   bench/gpu/prepare.sh            # then, on the GPU machine: bench/gpu/check.sh
#
# It first resolves what the check imports (carry.in) against the GPU machine's own versions
# (gpu-machine.txt) and requirements.lock's for the rest: when a locked package needs a newer
# torch or transformers than the machine has, it stops here and says which, not there.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
here="$root/bench/gpu"
out="$root/.whl"
limit_mib="${DOCMODEL_GPU_CARRY_LIMIT_MIB:-60}"  # the machine takes 64 MiB a call, tree included
cache="${DOCMODEL_CACHE:-$HOME/.cache/docmodel}"
uv_version="0.13.9"
uv="$cache/uv-bin/$uv_version/bin/uv"
python_bin="${PYTHON:-python3}"
log() { printf '[prepare %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

if [ ! -x "$uv" ]; then
  log "Installing uv $uv_version into $cache/uv-bin/$uv_version"
  "$python_bin" -m pip install --quiet --disable-pip-version-check --target "$cache/uv-bin/$uv_version" "uv==$uv_version"
fi
export UV_CACHE_DIR="$cache/uv"

mkdir -p "$out"
rm -f "$out"/*.whl "$out"/*.txt
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Constraints: the machine's pinned versions, then the lock's for each package carry.in names
# (their own dependencies resolve freely against the machine's).
grep -E '^[A-Za-z0-9_.-]+==' "$here/gpu-machine.txt" > "$work/constraints.txt"
pinned="$(sed -E 's/==.*//' "$work/constraints.txt" | tr 'A-Z_' 'a-z-')"
for name in $(grep -Ev '^(#|$)' "$here/carry.in" | tr 'A-Z_' 'a-z-'); do
  grep -qx "$name" <<<"$pinned" && continue
  grep -iE "^${name//-/[-_]}==" "$root/requirements.lock" || true
done >> "$work/constraints.txt"

log "Resolving carry.in for Python 3.12 against the GPU machine's versions"
if ! "$uv" pip compile "$here/carry.in" --constraint "$work/constraints.txt" \
    --python-version 3.12 --python-platform x86_64-manylinux_2_28 \
    --no-header --no-annotate --quiet -o "$out/resolved.txt" 2> "$work/resolve.err"; then
  cat "$work/resolve.err" >&2
  echo "prepare: requirements.lock and the GPU machine's versions (bench/gpu/gpu-machine.txt) do not fit together; see above for the package that needs a newer one" >&2
  exit 1
fi

# Carry what the machine lacks: every resolved package not named in gpu-machine.txt.
present="$(grep -Ev '^(#|$)' "$here/gpu-machine.txt" | sed -E 's/==.*//' | tr 'A-Z_' 'a-z-')"
: > "$out/carried.txt"
while IFS= read -r line; do
  name="$(printf '%s' "${line%%==*}" | tr 'A-Z_' 'a-z-')"
  case "$name" in nvidia-*|cuda-*) continue ;; esac
  grep -qx "$name" <<<"$present" || printf '%s\n' "$line" >> "$out/carried.txt"
done < <(grep -E '==' "$out/resolved.txt")

log "Downloading $(wc -l < "$out/carried.txt") wheels for CPython 3.12 / manylinux x86_64"
platforms=()
for n in 2_39 2_35 2_34 2_31 2_28 2_27 2_24 2_17; do platforms+=(--platform "manylinux_${n}_x86_64"); done
platforms+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any)
"$python_bin" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version 3.12 --implementation cp "${platforms[@]}" -d "$out" -r "$out/carried.txt"

# bitsandbytes ships a library per CUDA version; the machine runs CUDA 13.0: keep that one.
for wheel in "$out"/bitsandbytes-*.whl; do
  [ -e "$wheel" ] || continue
  "$python_bin" "$here/trim_wheel.py" "$wheel" 'libbitsandbytes_cuda1[0-2]' 'libbitsandbytes_cuda13[1-9]'
done

mkdir -p "$out/reference"
for base in "$root/shared" "$root/../shared" /work/shared; do
  if [ -d "$base/reference" ]; then
    cp "$base"/reference/*.py "$out/reference/"
    break
  fi
done
[ -n "$(ls "$out/reference" 2>/dev/null)" ] || { echo "prepare: no shared/reference scripts found beside $root" >&2; exit 1; }

size_kib="$(du -sk "$out" | cut -f1)"
log "Ready: $(ls "$out"/*.whl | wc -l) wheels and $(ls "$out/reference" | wc -l) reference scripts in .whl/, $((size_kib / 1024)) MiB"
if [ "$size_kib" -gt $((limit_mib * 1024)) ]; then
  echo "prepare: .whl/ holds $((size_kib / 1024)) MiB, over the $limit_mib MiB one call can carry" >&2
  exit 1
fi
