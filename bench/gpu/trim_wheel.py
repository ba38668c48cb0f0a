"""Remove files matching any of the given regular expressions from a wheel, in place, and
their lines from its RECORD (pip installs the rest as usual).

    python bench/gpu/trim_wheel.py dist/pkg.whl 'libfoo_cuda1[0-2]'
"""

from __future__ import annotations

import re
import sys
import zipfile
from pathlib import Path


def trim(wheel: Path, patterns: list[str]) -> tuple[int, int]:
    """Return (bytes before, bytes after)."""
    drop = [re.compile(p) for p in patterns]
    before = wheel.stat().st_size
    tmp = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if any(p.search(info.filename) for p in drop):
                continue
            data = src.read(info.filename)
            if info.filename.endswith(".dist-info/RECORD"):
                lines = data.decode().splitlines(keepends=True)
                data = "".join(
                    ln for ln in lines if not any(p.search(ln.split(",")[0]) for p in drop)
                ).encode()
            dst.writestr(info, data)
    tmp.replace(wheel)
    return before, wheel.stat().st_size


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    before, after = trim(Path(argv[0]), argv[1:])
    print(f"trimmed {Path(argv[0]).name}: {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
