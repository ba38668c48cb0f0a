#!/usr/bin/env bash
# Builds, or reuses, the container images with Podman: a Debian base (mmdebstrap), the operator,
# and the CPU variants of the trainer and the server, tagged as the Helm chart names them.
#
#   scripts/build-images.sh                      # all; reused when nothing that goes in changed
#   scripts/build-images.sh trainer --force      # rebuild one
#   scripts/build-images.sh --record bench/results/images.json   # also record sizes and times
#
# Installs podman, runc and mmdebstrap with apt when they are missing (as root). Behind a
# TLS-inspecting proxy, the CA bundle in $SSL_CERT_FILE (or --ca-bundle; else the host's trust
# store) is mounted into the builds' RUN steps, never copied into an image. docs/images.md has the details, and how to
# build the GPU variants with Docker, Podman or BuildKit.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
scripts/setup-env.sh
exec .venv/bin/python -m docmodel_devenv images "$@"
