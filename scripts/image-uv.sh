#!/bin/sh
# uv for the image builds: the Dockerfile's RUN steps bind this file as `uv` (with uv's cache
# mounted on /root/.cache/uv), so uv is never part of an image. The first call installs the
# pinned uv into that cache mount; later calls, and later builds, reuse it.
set -eu
version=0.13.9
cache=/root/.cache/uv  # the build's cache mount (whatever XDG_CACHE_HOME says)
home=$cache/uv-$version
if [ ! -x "$home/bin/uv" ]; then
    mkdir -p "${home%/*}"
    tmp=$(mktemp -d "$home.XXXXXX")
    python3 -m venv "$tmp"
    "$tmp/bin/pip" install --quiet --no-cache-dir "uv==$version"
    mv -T "$tmp" "$home" 2>/dev/null || rm -rf "$tmp"  # another build got there first
fi
# Keep every download in the cache mount, install into the first python3 on PATH (the image's
# venv, or a base's own Python such as vLLM's), never download a Python, copy rather than link
# out of the cache mount, and trust the system's CA store (a proxy's CA mounted over it for the
# build: docs/images.md).
export UV_CACHE_DIR=$cache UV_PYTHON="${UV_PYTHON:-python3}" UV_PYTHON_DOWNLOADS=never \
    UV_LINK_MODE=copy UV_SYSTEM_CERTS=1
exec "$home/bin/uv" "$@"
