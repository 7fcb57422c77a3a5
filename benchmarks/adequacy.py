"""Proxy adequacy of each space's default proxy, and what rotary positions buy it.

    python benchmarks/adequacy.py            # recorded run (~5 min on one core without the layout space;
                                             # that one took 515 s alone, machine shared)

Runs nas.evaluation.adequacy.check_adequacy for every shipped space on its default proxy and task (as
`python -m nas.search search_space=NAME` would before its first trial), plus sparse_attn on its proxy
with learned absolute positions instead of rotary ones, and sharing on the 2-layer tiny proxy (the structural
check only). Prints each check's measured value and threshold.
Last line: `adequacy passed=N failed=N rope_recall=... learned_recall=...`.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import replace

from nas.evaluation.adequacy import check_adequacy, depth_check
from nas.evaluation.data import load_task
from nas.evaluation.proxy import load_proxy, proxy_arch
from nas.study.space import default_choice, load, path_of

SPACES = ("sparse_attn", "head_grouping", "sharing", "precision", "layout")


def main() -> None:
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, 1 torch thread")
    outcomes: dict[str, bool] = {}
    recall: dict[str, float] = {}
    runs = [(space, load_proxy(default_choice(space, "proxy") or "tiny"), space) for space in SPACES]
    attention_proxy = load_proxy(default_choice("sparse_attn", "proxy") or "tiny")
    runs.append(("sparse_attn", replace(attention_proxy, positions="learned"), "sparse_attn (learned positions)"))
    for space, proxy, label in runs:
        task = load_task(default_choice(space, "task") or "lm")
        spec = load(path_of(space), proxy_arch({}, proxy))
        start = time.perf_counter()
        result = check_adequacy(spec, proxy, task, threads=1, device="cpu", noise=False)  # benchmarks/noise.py
        print(f"\n{label}: proxy {proxy.name} ({proxy.n_layers} layers, {proxy.seq_len} positions, "
              f"{proxy.positions}), task {task.name}: {'PASS' if result.passed else 'FAIL'} "
              f"({time.perf_counter() - start:.0f} s)")
        for c in result.checks:
            print(f"  {c['name']}: {c['measured']:.3f} (needs {c['threshold']:.3f}) {'ok' if c['passed'] else 'FAIL'}"
                  f" - {c['meaning']}")
        if result.fix:
            print(f"  fix: {result.fix}")
        if label in SPACES:
            outcomes[label] = result.passed
        first = result.checks[0]
        if space == "sparse_attn":
            recall[proxy.positions] = first["measured"]
    tiny = load_proxy("tiny")
    check, fix = depth_check(load(path_of("sharing"), proxy_arch({}, tiny)), tiny)
    print(f"\nsharing on the 2-layer tiny proxy: {check['name']}: {check['measured']:.0f} - {check['meaning']}; "
          f"fix: {fix}")
    print(f"adequacy passed={sum(outcomes.values())} failed={len(outcomes) - sum(outcomes.values())} "
          f"rope_recall={recall['rope']:.3f} learned_recall={recall['learned']:.3f}")


if __name__ == "__main__":
    main()
