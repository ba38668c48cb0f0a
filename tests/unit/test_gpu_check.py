"""The GPU check fits its loan: the per-part limits of bench/gpu/check.sh add up to at most 6
minutes (a 15-minute loan then holds a start, a run and a rerun), every part has a limit, and
the wheel trimmer keeps a wheel installable."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHECK = ROOT / "bench" / "gpu" / "check.sh"


def limits() -> dict[str, int]:
    match = re.search(r'^LIMITS="([^"]+)"', CHECK.read_text(), re.M)
    assert match, "check.sh must define LIMITS"
    return {name: int(limit) for name, limit in (e.split(":") for e in match.group(1).split())}


def test_part_limits_add_up_to_at_most_six_minutes() -> None:
    parts = limits()
    assert sum(parts.values()) <= 360, parts
    assert all(limit > 0 for limit in parts.values())


def test_every_part_in_the_script_has_a_limit() -> None:
    text = CHECK.read_text()
    defined = set(re.findall(r"^([a-z_]+)\(\) \{", text, re.M))
    assert {p if p != "eval" else "eval_" for p in limits()} == defined


def test_trimmed_wheel_loses_the_matching_files_and_their_record_lines(tmp_path: Path) -> None:
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("pkg/__init__.py", "")
        zf.writestr("pkg/libpkg_cuda120.so", b"x" * 100)
        zf.writestr("pkg/libpkg_cuda130.so", b"y" * 100)
        zf.writestr(
            "pkg-1.0.dist-info/RECORD",
            "pkg/__init__.py,,\npkg/libpkg_cuda120.so,,\npkg/libpkg_cuda130.so,,\n",
        )
    subprocess.run(
        [sys.executable, str(ROOT / "bench/gpu/trim_wheel.py"), str(wheel), "libpkg_cuda12"],
        check=True,
        capture_output=True,
    )
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        record = zf.read("pkg-1.0.dist-info/RECORD").decode()
    assert "pkg/libpkg_cuda120.so" not in names and "pkg/libpkg_cuda130.so" in names
    assert "cuda120" not in record and "cuda130" in record
