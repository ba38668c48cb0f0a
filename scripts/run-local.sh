#!/usr/bin/env bash
# Sets up the Python environment, then runs the whole DocModel lifecycle locally:
# ingest -> QA dataset -> LoRA training -> evaluation against the RAG baseline -> gate ->
# serving on localhost (OpenAI-compatible). With no arguments it uses the embedded demo
# (examples/local: bundled docs, a tiny random Llama, CPU). Arguments go to `docmodel local run`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup-env.sh"
exec "$root/.venv/bin/docmodel" local run "$@"
