"""Child processes that never outlive the process that started them.

Every child runs in its own session (so its process group can be killed as a
whole), with ``PR_SET_PDEATHSIG`` so the kernel kills it if this process dies
without cleaning up, and is registered so that teardown, ``atexit``, SIGINT and
SIGTERM all stop it.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_live: dict[int, subprocess.Popen[bytes]] = {}
_live_lock = threading.Lock()
_handlers_installed = False


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: no logging, no locks.
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    stop_all()
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


def install_handlers() -> None:
    """Stop every child on exit, SIGTERM and (where Python's default is kept) SIGINT."""
    global _handlers_installed
    if _handlers_installed:
        return
    _handlers_installed = True
    atexit.register(stop_all)
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _on_signal)
    # SIGINT stays Python's KeyboardInterrupt, which unwinds into teardown.


def start(
    name: str,
    argv: Sequence[str | os.PathLike[str]],
    log_path: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` with stdout and stderr appended to ``log_path``."""
    install_handlers()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as output:
        process = subprocess.Popen(
            [os.fspath(arg) for arg in argv],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    with _live_lock:
        _live[process.pid] = process
    log.debug("Started process name=%s pid=%d log=%s", name, process.pid, log_path)
    return process


def stop(process: subprocess.Popen[bytes], grace: float = 5.0) -> int | None:
    """SIGTERM the process group, SIGKILL it after ``grace`` seconds; reap it."""
    with _live_lock:
        _live.pop(process.pid, None)
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(grace)
    # The leader may be gone while others in its group still run.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)
    return process.returncode


def stop_all(grace: float = 5.0) -> None:
    """Stop every child still registered, newest first."""
    with _live_lock:
        processes = list(_live.values())[::-1]
    for process in processes:
        stop(process, grace)


def wait_until(
    predicate: object,
    timeout: float,
    what: str,
    process: subprocess.Popen[bytes] | None = None,
    log_path: Path | None = None,
    interval: float = 0.1,
) -> None:
    """Poll ``predicate()`` until it is true; fail early if ``process`` exits."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"{what}: process exited with code {process.returncode}" + _tail(log_path)
            )
        with contextlib.suppress(Exception):
            if predicate():  # type: ignore[operator]
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not ready after {timeout:.0f}s" + _tail(log_path))
        time.sleep(interval)


def _tail(log_path: Path | None, lines: int = 20) -> str:
    if log_path is None or not log_path.exists():
        return ""
    text = log_path.read_text(errors="replace").splitlines()[-lines:]
    return f"\n--- last lines of {log_path} ---\n" + "\n".join(text)
