"""``docmodel-devenv``: build the binaries, run the local cluster and S3.

docmodel-devenv build     # build or reuse kube-apiserver, etcd, kwok, MinIO, ...
docmodel-devenv up        # start everything; Ctrl-C tears it down
docmodel-devenv down      # stop an environment left behind by a killed `up`
docmodel-devenv images    # build or reuse the container images (Podman; docs/images.md)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from . import build, procs

if TYPE_CHECKING:
    from .stack import DevEnv

log = logging.getLogger("docmodel_devenv")


def state_file() -> Path:
    return build.cache_dir() / "devenv" / "state.json"


def _build(args: argparse.Namespace) -> int:
    names = args.family or None
    unknown = set(names or ()) - set(build.FAMILIES)
    if unknown:
        raise build.BuildError(f"unknown families: {', '.join(sorted(unknown))}")
    binaries = build.build_all(names)
    for name, path in sorted(binaries.paths.items()):
        sys.stdout.write(f"{name}\t{path}\n")
    return 0


def _up(args: argparse.Namespace) -> int:
    from .stack import DevEnv

    if args.build:
        build.build_all()
    workdir = Path(args.workdir) if args.workdir else None
    env = DevEnv.create(workdir, keep_workdir=args.workdir is not None)
    state = state_file()
    me = procs.identity(os.getpid())
    # Every child from here on (control plane, kwok, MinIO, pods) is listed in the state
    # file with its identity, for `down`.
    procs.record_to(
        state,
        up=None if me is None else asdict(me),
        workdir=str(env.workdir),
        temporary=not env.keep_workdir,
    )
    try:
        _serve(env)
    finally:
        procs.record_to(None)
        state.unlink(missing_ok=True)
    return 0


def _serve(env: DevEnv) -> None:
    with env:
        assert env.control_plane is not None
        sys.stdout.write(
            f"export KUBECONFIG={env.kubeconfig}\n"
            f"export PATH={env.binaries['kubectl'].parent}:$PATH  # kubectl {build.FAMILIES['kubernetes'].version()}\n"
            f"# S3 endpoint and credentials (JSON): {env.s3_file}\n"
            f"# S3 endpoint: {env.s3.endpoint if env.s3 else ''}\n"
            f"# API server ready after {env.control_plane.apiserver_ready_seconds:.1f}s, "
            f"everything after {env.seconds:.1f}s. Ctrl-C stops it.\n"
        )
        sys.stdout.flush()
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            log.info("Stopping on interrupt")


def _down(args: argparse.Namespace) -> int:
    """Stop what the state file lists, signalling only processes that are still the
    recorded ones (a killed `up` took its children along, and their pids may be reused)."""
    state = state_file()
    if not state.exists():
        log.info("No running dev environment found state=%s", state)
        return 0
    data = json.loads(state.read_text())
    up = procs.Identity(**data["up"]) if data.get("up") else None
    if up is not None and procs.is_running(up):
        with contextlib.suppress(ProcessLookupError):
            os.kill(up.pid, signal.SIGTERM)
            log.info("Signalled dev environment pid=%d", up.pid)
        deadline = time.monotonic() + 30  # it stops its children and removes its workdir
        while procs.is_running(up) and time.monotonic() < deadline:
            time.sleep(0.2)
    for recorded in data.get("processes", []):
        child = procs.Identity(**recorded)
        if procs.kill_recorded(child) == "killed":
            log.info("Killed process group pid=%d exe=%s", child.pid, child.exe)
    workdir = Path(data["workdir"]) if data.get("workdir") else None
    if workdir is not None and data.get("temporary") and workdir.exists():
        shutil.rmtree(workdir, ignore_errors=True)
        log.info("Removed workdir path=%s", workdir)
    state.unlink(missing_ok=True)
    log.info("Stopped dev environment state=%s", state)
    return 0


def _images(args: argparse.Namespace) -> int:
    from . import images

    built = images.build_all(args.image or None, ca=args.ca_bundle, force=args.force)
    for name, record in built.items():
        state = "reused" if record.get("reused") else f"built in {record['build_seconds']:.0f} s"
        sys.stdout.write(f"{name}\t{record['tag']}\t{record['size_mb']:.0f} MB\t{state}\n")
    if args.record:
        images.write_results(Path(args.record), built)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="docmodel-devenv", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    commands = parser.add_subparsers(dest="command", required=True)
    build_parser = commands.add_parser("build", help="build or reuse the binaries")
    build_parser.add_argument(
        "family",
        nargs="*",
        help=f"only these families (default: all of {', '.join(build.FAMILIES)})",
    )
    up = commands.add_parser("up", help="start the control plane, kwok, local node and MinIO")
    up.add_argument("--workdir", help="keep state here instead of a temporary directory")
    up.add_argument("--no-build", dest="build", action="store_false", help="fail if not built")
    commands.add_parser("down", help="stop an environment left behind by `up`")
    images = commands.add_parser("images", help="build or reuse the container images")
    images.add_argument("image", nargs="*", help="only these (default: operator trainer server)")
    images.add_argument("--ca-bundle", help="CA bundle for the builds (default: $SSL_CERT_FILE)")
    images.add_argument("--force", action="store_true", help="build even when nothing changed")
    images.add_argument("--record", help="write sizes, layers and build times to this JSON file")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    handlers = {"build": _build, "up": _up, "down": _down, "images": _images}
    from .images import ImageError

    try:
        return handlers[args.command](args)
    except (build.BuildError, ImageError) as error:
        log.error("%s", error)
        return 1


if __name__ == "__main__":
    sys.exit(main())
