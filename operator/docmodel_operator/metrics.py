"""Prometheus metrics: controller-runtime's reconcile metrics plus bounded domain metrics.

No label carries an object's name or namespace, so the series count does not grow with the
number of DocModels.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CONTROLLER = "docmodel"

RECONCILE_TOTAL = Counter(
    "controller_runtime_reconcile_total",
    "Total number of reconciliations per controller.",
    ["controller", "result"],
)
RECONCILE_ERRORS = Counter(
    "controller_runtime_reconcile_errors_total",
    "Total number of reconciliation errors per controller.",
    ["controller"],
)
RECONCILE_TIME = Histogram(
    "controller_runtime_reconcile_time_seconds",
    "Length of time per reconciliation per controller.",
    ["controller"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
QUEUE_DEPTH = Gauge("workqueue_depth", "Current depth of workqueue.", ["name"])
STEPS_STARTED = Counter(
    "docmodel_steps_started_total", "Lifecycle steps started, by step.", ["step"]
)
STEP_FAILURES = Counter(
    "docmodel_step_failures_total",
    "Failed lifecycle steps, by step and reason.",
    ["step", "reason"],
)
STAGE_DURATION = Histogram(
    "docmodel_stage_duration_seconds",
    "Time from a step's Job creation to its completion, by step.",
    ["step"],
    buckets=(10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400),
)
GATE_DECISIONS = Counter(
    "docmodel_gate_decisions_total",
    "Verdicts of the promotion gate, by verdict and reason.",
    ["verdict", "reason"],
)
ROLLOUTS = Counter(
    "docmodel_rollouts_total", "Rollouts of promoted revisions, by result.", ["result"]
)
SOURCE_CHECKS = Counter(
    "docmodel_source_checks_total", "Listings of DocModels' sources, by result.", ["result"]
)
