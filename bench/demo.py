"""The README's first command as a new user runs it, timed: `scripts/run-local.sh` on the
embedded demo with an empty artifact store (the Python environment and the converted model
may be cached; `--cold-model` removes the converted model first), then the same command again,
which must reuse the revision. Records each stage's seconds, the total, the peak RSS of any
process it started, the verdict with every system's scores, and the candidate/baseline latency
ratio at equal prompt length, in `bench/results/demo.json`.

    python bench/demo.py [--cold-model]
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import cpu_model, write_result

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "bench" / "results" / "demo.json"


def run(store: Path) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.monotonic()
    env = {**os.environ, "DOCMODEL_LOCAL_STORE": str(store)}
    done = subprocess.run(
        [str(ROOT / "scripts" / "run-local.sh")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    return time.monotonic() - started, done


def stage_seconds(stderr: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for step, seconds in re.findall(r"Finished step=([\w-]+)\S* .*?seconds=([\d.]+)", stderr):
        out[step] = out.get(step, 0.0) + float(seconds)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cold-model", action="store_true", help="convert the model again")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "core"))
    from docmodel import basemodel
    from docmodel.api import BaseModelSpec
    from docmodel.report import EvalReport

    name = "HuggingFaceTB/SmolLM2-135M-Instruct"
    found = basemodel.locate(BaseModelSpec(name=name))
    cached = found.kind == "cache" and found.path is not None
    if args.cold_model and cached and found.path is not None:
        shutil.rmtree(found.path)
    # Whether this run converts the model (--cold-model, or a machine that never did).
    converts = args.cold_model or not cached
    store = Path(tempfile.mkdtemp(prefix="docmodel-demo-bench-"))
    try:
        wall, first = run(store)
        peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2
        if first.returncode != 0:
            sys.stderr.write(first.stdout[-3000:] + first.stderr[-3000:])
            return 1
        again_wall, again = run(store)
        revision = re.search(r"Revision (\w+): (\w+) — (.+)", first.stdout)
        assert revision is not None, first.stdout
        rev, verdict, reason = revision.groups()
        report_path = store / "local" / "handbook" / f"rev-{rev}" / "eval" / "report.json"
        report = EvalReport.model_validate_json(report_path.read_text())
        costs = report.costs
        ratio = costs["candidate"].latency_p50_s / costs["baseline"].latency_p50_s
        systems = {
            system: {
                **report.aggregate[system].model_dump(),
                "mean_answer_words": report.mean_answer_words.get(system),
                "mean_prompt_tokens": costs[system].mean_prompt_tokens,
                "mean_answer_tokens": costs[system].mean_answer_tokens,
                "latency_p50_s": costs[system].latency_p50_s,
                "latency_p99_s": costs[system].latency_p99_s,
            }
            for system in report.aggregate
        }
        diff = report.differences["candidate-baseline"][report.gate_metric or "token_f1"]
        closing = first.stdout[first.stdout.index("\nScores on") :].strip().splitlines()
        result = {
            "benchmark": "demo",
            "command": "scripts/run-local.sh (empty store)",
            "date": datetime.date.today().isoformat(),
            "machine": f"{cpu_model()}, {os.cpu_count()} cores",
            "model": name,
            "model_cache": "cold (converted in this run)" if converts else "warm",
            "stages_s": stage_seconds(first.stderr),
            "total_s": round(wall, 1),
            "peak_rss_gib": round(peak_gib, 2),
            "rerun_s": round(again_wall, 1),
            "rerun_reused": f"Reused revision {rev}" in again.stdout,
            "revision": rev,
            "verdict": verdict,
            "reason": reason,
            "gate_metric": report.gate_metric,
            "questions": len(report.questions),
            "candidate_minus_baseline": diff.model_dump(),
            "systems": systems,
            "latency_ratio_candidate_to_baseline_p50": round(ratio, 3),
            "adapter_weights": report.decoding.adapter_weights,
            "closing_lines": closing,
        }
        write_result(
            RESULT,
            result,
            (
                "total_s",
                "stages_s",
                "peak_rss_gib",
                "verdict",
                "latency_ratio_candidate_to_baseline_p50",
            ),
        )
        return 0
    finally:
        shutil.rmtree(store, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
