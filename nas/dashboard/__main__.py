"""`python -m nas.dashboard`: build (and optionally serve) the dashboards from the store; exit 2 on bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nas.profiles import hydra_entry


def run(cfg: Any) -> list[Path]:
    """Build the pages the config asks for, print their paths, then serve them when serve=true."""
    from nas.dashboard import DEFAULT_OUT, build, build_comparison
    from nas.dashboard.serve import DashboardServer, serve

    url = (cfg.get("store") or {}).get("url")
    studies = [str(s) for s in (cfg.get("studies") or [])]
    names = studies or ([str(cfg.study)] if cfg.get("study") else [])
    out_dir = Path(cfg.out_dir) if cfg.get("out_dir") else DEFAULT_OUT
    refresh = float(cfg.refresh_s) if cfg.serve else None
    server = DashboardServer(out_dir, int(cfg.port)) if cfg.serve else None  # a taken port fails before building

    def rebuild(only_changed: bool = False) -> list[Path]:
        paths = build(url, names, out_dir, refresh_s=refresh, only_changed=only_changed)
        if studies:
            paths.append(build_comparison(url, studies, out_dir, refresh_s=refresh))
        return paths

    paths = rebuild()
    for p in paths:
        print(f"dashboard: {p}", flush=True)
    if server is not None:
        serve(server, lambda: rebuild(only_changed=True), float(cfg.refresh_s))
    return paths


def main() -> None:
    """Hydra entry point over conf/dashboard.yaml; bad input ends as one stderr line, exit 2."""
    from omegaconf import OmegaConf

    hydra_entry("dashboard", lambda plain: run(OmegaConf.create(plain)))


if __name__ == "__main__":
    main()
