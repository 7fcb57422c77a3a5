"""Ray's scratch folder of a search: a killed driver's is swept at the next start, a live driver's never."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from nas.search.scratch import PREFIX, ray_scratch, sweep_stale


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_folders_of_dead_drivers_go_and_live_ones_stay(tmp_path: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.1)
        dead = tmp_path / f"{PREFIX}{_dead_pid()}-abc123"  # a driver killed mid-search
        live = tmp_path / f"{PREFIX}{sleeper.pid}-def456"  # a driver still searching
        reused = tmp_path / f"{PREFIX}{sleeper.pid}-ghi789"  # its pid now belongs to a newer process
        mine = tmp_path / f"{PREFIX}{os.getpid()}-jkl012"
        older = tmp_path / f"{PREFIX}mno345"  # no pid in the name (before this rule): its owner is unknown
        for folder in (dead, live, reused, mine, older):
            (folder / "exp").mkdir(parents=True)
            (folder / "exp" / "state.json").write_text("{}")
        hour_ago = time.time() - 3600
        os.utime(reused, (hour_ago, hour_ago))  # last written before the process with that pid started
        a_file = tmp_path / f"{PREFIX}{_dead_pid()}-file"  # not a folder
        a_file.write_text("")
        assert sorted(sweep_stale(tmp_path)) == sorted([dead, reused])
        assert sorted(tmp_path.iterdir()) == sorted([live, mine, older, a_file])
    finally:
        sleeper.kill()
        sleeper.wait()
    assert sweep_stale(tmp_path) == [live]  # its driver has ended now


def test_ray_scratch_sweeps_then_names_its_folder_after_this_process(tmp_path: Path) -> None:
    stale = tmp_path / f"{PREFIX}{_dead_pid()}-abc123"
    stale.mkdir()
    with ray_scratch(tmp_path) as folder:
        assert not stale.exists()
        assert Path(folder).parent == tmp_path and Path(folder).name.startswith(f"{PREFIX}{os.getpid()}-")
        assert sweep_stale(tmp_path) == []  # a live search's folder is never swept
    assert list(tmp_path.iterdir()) == []
