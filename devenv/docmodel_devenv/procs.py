"""Child processes that never outlive the process that started them.

Every child runs in its own session (so its process group can be killed as a
whole), with ``PR_SET_PDEATHSIG`` so the kernel kills it if this process dies
without cleaning up, and is registered so that teardown, ``atexit``, SIGINT and
SIGTERM all stop it.

Each child's `Identity` (pid, start time, executable) can be kept in a state file
(`record_to`), so that `docmodel-devenv down` signals only processes that are still
the ones this process started, never an unrelated one that reuses a pid.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_SIGKILL = int(signal.SIGKILL)
_live: dict[int, subprocess.Popen[bytes]] = {}
_identities: dict[int, Identity] = {}
_record: tuple[Path, dict[str, Any]] | None = None
_live_lock = threading.Lock()
_handlers_installed = False


def _resolve_prctl() -> Callable[..., int] | None:
    """libc's ``prctl``, looked up once in the parent: loading a library (dlopen) in a
    child forked from a threaded process can deadlock on a lock another thread held."""
    try:
        prctl: Callable[..., int] = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        log.warning("Found no prctl in libc.so.6: children will not die with this process")
        return None
    return prctl


_prctl = _resolve_prctl()


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: only calls what was resolved before the
    # fork; no imports, no library loading, no logging, no locks.
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, _SIGKILL)


@dataclass(frozen=True)
class Identity:
    """What tells a process from a later one that reuses its pid."""

    pid: int
    start_time: int  # clock ticks after boot: field 22 of /proc/<pid>/stat
    exe: str  # the target of /proc/<pid>/exe; "" where it cannot be read


@dataclass(frozen=True)
class _Stat:
    pgrp: int
    session: int
    start_time: int


def _stat(pid: int) -> _Stat | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2, the command name, is in parentheses and may hold spaces or ")": the
    # fields after the last ")" start at field 3.
    fields = text[text.rindex(")") + 2 :].split()
    return _Stat(pgrp=int(fields[2]), session=int(fields[3]), start_time=int(fields[19]))


def identity(pid: int) -> Identity | None:
    """The identity of the running process ``pid``; None when there is none."""
    stat = _stat(pid)
    if stat is None:
        return None
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        exe = ""
    return Identity(pid, stat.start_time, exe)


def is_running(recorded: Identity) -> bool:
    """Whether ``recorded.pid`` is still the very process that was recorded."""
    return identity(recorded.pid) == recorded


def kill_recorded(recorded: Identity) -> str:
    """SIGKILL the process group of a child recorded by `record_to`, but only if it is
    still that child's group. Returns what happened: killed, gone or reused.

    A leader that is still the recorded process: its group is killed. A leader that
    has exited: the members of its group (processes it started, which inherited its
    group and session, started no earlier than it) are killed one by one. A pid now
    held by another process: nothing is signalled.
    """
    current = identity(recorded.pid)
    if current == recorded:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(recorded.pid, signal.SIGKILL)
        return "killed"
    if current is not None:
        log.info(
            "Skipped process reused since recorded pid=%d recorded_start=%d start=%d exe=%s",
            recorded.pid,
            recorded.start_time,
            current.start_time,
            current.exe,
        )
        return "reused"
    killed = False
    for member in _orphans(recorded):
        if is_running(member):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(member.pid, signal.SIGKILL)
                killed = True
    return "killed" if killed else "gone"


def _orphans(leader: Identity) -> list[Identity]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _stat(int(entry.name))
        if (
            stat is not None
            and stat.pgrp == leader.pid
            and stat.session == leader.pid
            and stat.start_time >= leader.start_time
            and (found := identity(int(entry.name))) is not None
        ):
            members.append(found)
    return members


def record_to(path: Path | None, **extra: Any) -> None:
    """Keep ``path`` (JSON: ``extra`` and ``processes``, the identity of every live
    child) up to date as children start and stop; None stops recording."""
    global _record
    with _live_lock:
        _record = (path, extra) if path is not None else None
        _write_record()


def _write_record() -> None:
    # Called with _live_lock held.
    if _record is None:
        return
    path, extra = _record
    data = {**extra, "processes": [asdict(i) for i in _identities.values()]}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data))
    partial.replace(path)


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
            preexec_fn=_die_with_parent if _prctl is not None else None,
        )
    # Popen returns once the child has exec'd: its identity is the program's.
    started = identity(process.pid)
    with _live_lock:
        _live[process.pid] = process
        if started is not None:
            _identities[process.pid] = started
            _write_record()
    log.debug("Started process name=%s pid=%d log=%s", name, process.pid, log_path)
    return process


def stop(process: subprocess.Popen[bytes], grace: float = 5.0) -> int | None:
    """SIGTERM the process group, SIGKILL it after ``grace`` seconds; reap it."""
    with _live_lock:
        _live.pop(process.pid, None)
        if _identities.pop(process.pid, None) is not None:
            _write_record()
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
