"""`python -m nas.dashboard`: build (and optionally serve) the dashboards from the store; exit 2 on bad input."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


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
    """Hydra entry point over conf/dashboard.yaml."""
    import hydra
    from omegaconf import DictConfig

    @hydra.main(config_path=str(Path(__file__).resolve().parents[2] / "conf"), config_name="dashboard",
                version_base="1.3")
    def _main(cfg: DictConfig) -> None:
        try:
            run(cfg)
        except ValueError as err:  # DashboardError and bad values
            print(f"error: {err}", file=sys.stderr, flush=True)
            sys.exit(2)

    _main()


if __name__ == "__main__":
    main()
