"""``docmodel-devenv``: build the binaries, run the local cluster and S3.

docmodel-devenv build     # build or reuse kube-apiserver, etcd, kwok, MinIO, ...
docmodel-devenv up        # start everything; Ctrl-C tears it down
docmodel-devenv down      # stop an environment left behind by a killed `up`
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from . import build

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
    with env:
        assert env.control_plane is not None
        state = state_file()
        state.parent.mkdir(parents=True, exist_ok=True)
        state.write_text(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "workdir": str(env.workdir),
                    "kubeconfig": str(env.kubeconfig),
                    "children": [p.pid for p in env.control_plane.processes.values()],
                }
            )
        )
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
        finally:
            state.unlink(missing_ok=True)
    return 0


def _down(args: argparse.Namespace) -> int:
    state = state_file()
    if not state.exists():
        log.info("No running dev environment found state=%s", state)
        return 0
    data = json.loads(state.read_text())
    with contextlib.suppress(ProcessLookupError):
        os.kill(data["pid"], signal.SIGTERM)
        log.info("Signalled dev environment pid=%d", data["pid"])
    for child in data.get("children", []):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child, signal.SIGKILL)
    state.unlink(missing_ok=True)
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
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    handlers = {"build": _build, "up": _up, "down": _down}
    try:
        return handlers[args.command](args)
    except build.BuildError as error:
        log.error("%s", error)
        return 1


if __name__ == "__main__":
    sys.exit(main())
