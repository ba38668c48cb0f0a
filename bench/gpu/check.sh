#!/usr/bin/env bash
# Everything that needs a GPU, in one call of at most 6 minutes (so a rerun still fits a
# 15-minute loan): install the carried wheels, the GPU tests, the training and evaluation
# benchmarks against their baselines, and a short profile of our training step. Each part has
# its own time limit (LIMITS below), so one slow part cannot starve the others. Results (at most
# 8 files) go to $OUT when set (the GPU machine's return folder), else bench/results/gpu-check/.
#
#   bench/gpu/prepare.sh                  # first, on a CPU machine with PyPI: fills .whl/
#   bench/gpu/check.sh                    # on the GPU machine, with .whl/ carried
#   bench/gpu/check.sh --cpu-dry-run      # every part on tiny shapes, on CPU (CI runs this)
#
# Prints one summary line per part and per figure; exits non-zero when a part failed.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

# part:limit_s, run in this order; tests/unit/test_gpu_check.py keeps the sum at 360 or less.
LIMITS="install:30 gpu_tests:90 train:150 eval:60 profile:30"

dry=0
case "${1:-}" in
  --cpu-dry-run) dry=1 ;;
  "") ;;
  *) echo "usage: bench/gpu/check.sh [--cpu-dry-run]" >&2; exit 2 ;;
esac

out="${OUT:-$root/bench/results/gpu-check}"
[ "$dry" = 1 ] && [ -z "${OUT:-}" ] && out="$(mktemp -d)"
mkdir -p "$out"
log="$out/check.log"
: > "$log"
export PYTHONUNBUFFERED=1

if [ "$dry" = 1 ]; then
  py="${PYTHON:-$root/.venv/bin/python}"
  train_args=(--steps 2 --warmup 1)
  eval_args=(--questions 4 --one-at-a-time 2 --new-tokens 4)
else
  py="${PYTHON:-python3}"
  train_args=(--steps 10 --warmup 3)
  eval_args=()
  export PYTHONPATH="/tmp/site:$root/core:$root/trainer-image:$root/server-image${PYTHONPATH:+:$PYTHONPATH}"
fi

install() {
  if [ "$dry" = 1 ]; then
    echo "dry run: the environment in .venv has every package"
    return 0
  fi
  ls .whl/*.whl > /dev/null 2>&1 || { echo "no wheels in .whl/: run bench/gpu/prepare.sh first and carry .whl" >&2; return 1; }
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  "$py" -c "import torch, transformers, peft, trl, bitsandbytes, datasets, docmodel_trainer; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'trl', trl.__version__, 'bitsandbytes', bitsandbytes.__version__, 'cuda', torch.cuda.is_available())"
}
gpu_tests() { "$py" -m pytest -q -p no:cacheprovider -m gpu tests/e2e/test_qlora_gpu.py; }
train() { "$py" bench/train_throughput.py "${train_args[@]}" --out "$out/train_throughput.json"; }
eval_() { "$py" bench/eval_throughput.py "${eval_args[@]}" --out "$out/eval_throughput.json"; }
profile() { "$py" bench/train_throughput.py --steps 2 --warmup 1 --profile "$out/profile.txt"; }

failed=0
for entry in $LIMITS; do
  name="${entry%%:*}"
  limit="${entry##*:}"
  fn="$name"
  [ "$name" = eval ] && fn=eval_
  printf '\n=== %s (limit %ss) ===\n' "$name" "$limit" >> "$log"
  start=$(date +%s)
  # A function cannot be given to timeout(1): run this script's part in a child bash.
  timeout --kill-after=10 "$limit" bash -c "$(declare -f "$fn"); $(declare -p py out dry train_args eval_args root); cd \"\$root\"; $fn" >> "$log" 2>&1
  rc=$?
  seconds=$(( $(date +%s) - start ))
  status=ok
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then status="timed out"; elif [ "$rc" != 0 ]; then status="failed (exit $rc)"; fi
  [ "$status" = ok ] || failed=1
  echo "part $name: $status in ${seconds}s (limit ${limit}s)"
done

"$py" - "$out" <<'PY'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
figures = {
    "train_throughput.json": ("gpu", "mode", "ratio", "ours_tokens_per_s", "baseline_tokens_per_s",
                              "ours_peak_gib", "baseline_peak_gib", "non_padding_fraction",
                              "unsloth_tokens_per_s"),
    "eval_throughput.json": ("gpu", "mode", "ratio", "ours_answers_per_s",
                             "one_at_a_time_answers_per_s"),
}
for name, keys in figures.items():
    path = out / name
    if not path.is_file():
        print(f"{name}: no result")
        continue
    data = json.loads(path.read_text())
    for key in keys:
        if key in data:
            print(f"{name.removesuffix('.json')} {key}={data[key]}")
PY
echo "results and log: $out"
exit "$failed"
