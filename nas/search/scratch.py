"""Ray Tune's scratch folder of a search: named after its driver's process, swept once that process is dead."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PREFIX = "nas-ray-"
_NAME = re.compile(rf"{PREFIX}(\d+)-\w+")  # nas-ray-<driver pid>-<random>


@contextmanager
def ray_scratch(root: str | Path | None = None) -> Iterator[str]:
    """A fresh nas-ray-<pid>-* folder under `root` (the temp dir), removed afterwards; stale ones swept first."""
    sweep_stale(root)
    with tempfile.TemporaryDirectory(prefix=f"{PREFIX}{os.getpid()}-", dir=root) as tmp:
        yield tmp


def sweep_stale(root: str | Path | None = None) -> list[Path]:
    """Remove this user's nas-ray-<pid>-* folders whose driver is dead (a killed search's); the paths removed."""
    removed = []
    for folder in Path(root or tempfile.gettempdir()).glob(f"{PREFIX}*"):
        found = _NAME.fullmatch(folder.name)
        try:
            info = folder.lstat()
        except OSError:  # removed meanwhile
            continue
        if found is None or not folder.is_dir() or folder.is_symlink() or info.st_uid != os.getuid():
            continue
        if not _alive(int(found.group(1)), info.st_mtime):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _alive(pid: int, folder_mtime: float) -> bool:
    """Whether process `pid` runs and could own a folder last modified at `folder_mtime` (not a reused pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    started = _start_time(pid)
    return started is None or started <= folder_mtime + 2.0  # its owner started before it wrote the folder (btime: 1 s)


def _start_time(pid: int) -> float | None:
    """When `pid` started (seconds since the epoch) from /proc; None where /proc cannot tell."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, after the parenthesised command name
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None
