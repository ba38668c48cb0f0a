# syntax=docker/dockerfile:1
# DocModel's three images, one target each, built from the repository root (docs/images.md):
#
#   docker build --target operator -t ghcr.io/docmodel/operator:0.1.0 .
#   docker build --target trainer  -t ghcr.io/docmodel/trainer:0.1.0 .                 # GPU
#   docker build --target server   -t ghcr.io/docmodel/server:0.1.0 \
#       --build-arg BASE=vllm/vllm-openai:v0.30.0 .                                      # GPU
#   docker build --target trainer  --build-arg VARIANT=cpu -t ghcr.io/docmodel/trainer:0.1.0-cpu .
#   scripts/build-images.sh                          # what the tests run: operator, CPU variants
#
# - operator: `docmodel-operator`, which the Helm chart in charts/docmodel-operator runs. It never
#   imports torch, so the image holds only the operator, the shared core and their libraries.
#   Probe: httpGet /healthz on 8080; metrics on 9090.
# - trainer: `docmodel-trainer ingest | train | evaluate`, the operator's Jobs. VARIANT=gpu (the
#   default) adds bitsandbytes for QLoRA's 4-bit NF4 weights to torch as requirements.lock pins
#   it (PyPI's Linux wheel carries its CUDA libraries; the driver comes from the node).
# - server: `docmodel-server serve`. VARIANT=gpu builds on vLLM's image (BASE above) and execs
#   `vllm serve` with the adapter as a LoRA module; DocModel joins vLLM's own Python with every
#   package vLLM has pinned as a constraint. VARIANT=cpu: the local engine (transformers + peft).
#
# BASE is any Debian-like image with Python 3.11 and its venv module (for the GPU server: an
# image with vLLM). Every image runs as the non-root user 10001 and writes only to the emptyDirs
# the operator (or the chart) mounts, so the root filesystem can be read-only.
ARG BASE=python:3.11.14-slim-bookworm

# --- each image's wheel: the shared core plus that image's package ---------------------------
FROM ${BASE} AS source
WORKDIR /src
COPY pyproject.toml README.md ./
COPY core ./core

FROM source AS operator-wheel
COPY operator ./operator
RUN --mount=type=cache,id=docmodel-uv,target=/root/.cache/uv \
    --mount=type=bind,source=scripts/image-uv.sh,target=/usr/local/bin/uv \
    uv build --quiet --wheel --out-dir /dist .

FROM source AS trainer-wheel
COPY trainer-image ./trainer-image
RUN --mount=type=cache,id=docmodel-uv,target=/root/.cache/uv \
    --mount=type=bind,source=scripts/image-uv.sh,target=/usr/local/bin/uv \
    uv build --quiet --wheel --out-dir /dist .

FROM source AS server-wheel
COPY server-image ./server-image
RUN --mount=type=cache,id=docmodel-uv,target=/root/.cache/uv \
    --mount=type=bind,source=scripts/image-uv.sh,target=/usr/local/bin/uv \
    uv build --quiet --wheel --out-dir /dist .

# --- what every image starts from -------------------------------------------------------------
# uv (scripts/image-uv.sh) is bound into each step that installs, with its cache mounted, so
# neither uv nor a download cache reaches an image. Packages go into /opt/docmodel/venv, or into
# the base's own Python where that already has torch (vLLM's image): uv installs into the first
# python3 on PATH, the venv's when there is one.
FROM ${BASE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/docmodel/venv/bin:$PATH
WORKDIR /opt/docmodel
COPY requirements.lock ./
RUN --mount=type=cache,id=docmodel-uv,target=/root/.cache/uv \
    --mount=type=bind,source=scripts/image-uv.sh,target=/usr/local/bin/uv \
    useradd --uid 10001 --create-home --home-dir /home/docmodel --shell /usr/sbin/nologin docmodel \
 && if python3 -c 'import torch' 2>/dev/null; then echo "torch comes with the base image"; \
    else uv venv --quiet --python python3 /opt/docmodel/venv; fi
ARG SOURCE=https://github.com/docmodel/docmodel
LABEL org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"

# torch in a layer of its own that changes only with the lock: the trainer and the CPU server
# start with this identical step, so the two images share it.
FROM runtime AS torch
RUN --mount=type=cache,id=docmodel-uv,target=/root/.cache/uv \
    --mount=type=bind,source=scripts/image-uv.sh,target=/usr/local/bin/uv \
    python3 -c 'import torch' 2>/dev/null \
 || uv pip install --quiet --constraint requirements.lock torch
# The directories the workloads write: the operator mounts emptyDirs on them (and on /tmp).
RUN mkdir -p /var/lib/docmodel/work /var/lib/docmodel/hf && chown -R docmodel:docmodel /var/lib/docmodel
ENV XDG_CACHE_HOME=/tmp/.cache \
    TRITON_CACHE_DIR=/tmp/.triton \
    HF_HUB_DISABLE_TELEMETRY=1 \
    TOKENIZERS_PARALLELISM=false

# --- operator ---------------------------------------------------------------------------------
FROM runtime AS operator
# `operator` brings kopf, the kubernetes client, pydantic-settings and prometheus-client on top
# of the core's libraries, each at the version requirements.lock pins (a constraint: nothing
# floats, nothing outside the extra is installed). This layer changes only with the lock.
COPY pyproject.toml ./
RUN --mount=type=cache,id=docmodel-uv,target=/root/.cache/uv \
    --mount=type=bind,source=scripts/image-uv.sh,target=/usr/local/bin/uv \
    uv pip install --quiet -r pyproject.toml --extra operator --constraint requirements.lock
# The project's code, as a wheel without dependencies (they are all above).
COPY --from=operator-wheel /dist /tmp/dist
RUN --mount=type=cache,id=docmodel-uv,target=/root/.cache/uv \
    --mount=type=bind,source=scripts/image-uv.sh,target=/usr/local/bin/uv \
    uv pip install --quiet --no-deps /tmp/dist/*.whl && rm -rf /tmp/dist \
 && python -c "import docmodel_operator.main, docmodel_operator.settings"
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="docmodel-operator" \
      org.opencontainers.image.description="DocModel operator: DocModel resources to trained, evaluated, served models" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
USER 10001:10001
WORKDIR /
EXPOSE 8080 9090
ENTRYPOINT ["docmodel-operator"]

# --- trainer ----------------------------------------------------------------------------------
FROM torch AS trainer
ARG VARIANT=gpu
# `trainer` brings transformers, trl, peft, datasets, the retrievers and the parsers; `gpu`
# brings bitsandbytes; every version the one requirements.lock pins. pyproject's [tool.uv]
# overrides keep the packaged models' unused runtimes out.
COPY pyproject.toml ./
RUN --mount=type=cache,id=docmodel-uv,target=/root/.cache/uv \
    --mount=type=bind,source=scripts/image-uv.sh,target=/usr/local/bin/uv \
    case "$VARIANT" in gpu) gpu="--extra gpu" ;; cpu) gpu="" ;; *) echo "VARIANT: gpu or cpu" >&2; exit 2 ;; esac \
 && uv pip install --quiet -r pyproject.toml --extra trainer $gpu --constraint requirements.lock
# The project's code, as a wheel without dependencies (they are all above).
COPY --from=trainer-wheel /dist /tmp/dist
RUN --mount=type=cache,id=docmodel-uv,target=/root/.cache/uv \
    --mount=type=bind,source=scripts/image-uv.sh,target=/usr/local/bin/uv \
    uv pip install --quiet --no-deps /tmp/dist/*.whl && rm -rf /tmp/dist \
 && docmodel-trainer --help > /dev/null \
 && python -c "import docmodel_trainer.cli, transformers, peft, trl, bm25s, docmodel_embedding"
ENV DOCMODEL_WORKDIR=/var/lib/docmodel/work \
    DOCMODEL_MODEL_CACHE=/var/lib/docmodel/work/.models \
    HF_HOME=/var/lib/docmodel/work/.hf
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="docmodel-trainer" \
      org.opencontainers.image.description="DocModel workloads: ingest, QLoRA training, evaluation" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      dev.docmodel.image.variant="${VARIANT}"
USER 10001:10001
WORKDIR /var/lib/docmodel
ENTRYPOINT ["docmodel-trainer"]
CMD ["--help"]

# --- server -----------------------------------------------------------------------------------
FROM torch AS server
ARG VARIANT=gpu
# `server` brings the retrievers, FastAPI, uvicorn, transformers and peft. The GPU variant pins
# everything vLLM's Python already has, so nothing vLLM needs is upgraded or downgraded.
COPY pyproject.toml ./
RUN --mount=type=cache,id=docmodel-uv,target=/root/.cache/uv \
    --mount=type=bind,source=scripts/image-uv.sh,target=/usr/local/bin/uv \
    case "$VARIANT" in \
      cpu) uv pip install --quiet -r pyproject.toml --extra server --constraint requirements.lock ;; \
      gpu) python3 -c 'import vllm' 2>/dev/null || { echo "VARIANT=gpu builds on vLLM's image: \
--build-arg BASE=vllm/vllm-openai:v0.30.0 (or VARIANT=cpu for the local engine)" >&2; exit 2; } \
        && uv pip freeze --exclude-editable | grep -v ' @ ' > /tmp/vllm.txt \
        && uv pip install --quiet -r pyproject.toml --extra server --constraint /tmp/vllm.txt \
        && rm /tmp/vllm.txt ;; \
      *) echo "VARIANT: gpu or cpu" >&2; exit 2 ;; \
    esac
# The project's code, as a wheel without dependencies (they are all above).
COPY --from=server-wheel /dist /tmp/dist
RUN --mount=type=cache,id=docmodel-uv,target=/root/.cache/uv \
    --mount=type=bind,source=scripts/image-uv.sh,target=/usr/local/bin/uv \
    uv pip install --quiet --no-deps /tmp/dist/*.whl && rm -rf /tmp/dist \
 && docmodel-server --help > /dev/null \
 && python3 -c "import docmodel_server.cli, docmodel_server.engine, fastapi, uvicorn, peft, bm25s, docmodel_embedding"
ENV DOCMODEL_WORKDIR=/var/lib/docmodel \
    DOCMODEL_MODEL_CACHE=/var/lib/docmodel/models \
    HF_HOME=/var/lib/docmodel/hf
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="docmodel-server" \
      org.opencontainers.image.description="DocModel serving: an OpenAI-compatible endpoint for a DocModel's promoted revision" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      dev.docmodel.image.variant="${VARIANT}"
USER 10001:10001
WORKDIR /var/lib/docmodel
EXPOSE 8000
ENTRYPOINT ["docmodel-server"]
CMD ["serve"]
