"""Real targets: nas.cost's parameter count of each published model against transformers' own model (built from the
published config on the meta device), and what a few knobs save on each, beside the byte-level gpt_1b targets.

Knobs are costed in target units (nas.cost.estimate with a knob dict), as ratios to the target's dense baseline
(every knob at its default: MHA, dense attention, no sharing, fp32). Analytic only: no timing, so a busy machine
does not change a figure.

    python benchmarks/targets.py          # writes benchmarks/results/targets_cpu.txt
    python benchmarks/targets.py --quick  # print only

Last line: `targets params_match=N/M sharing_params_ratio=... window512_flops_ratio=... gqa_params_ratio=...`
(the last three for the default target, llama3.2_1b_32k).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nas.cost import Coster, estimate, load_target, param_counts, published_arch  # noqa: E402
from nas.evaluation.proxy import load_proxy, proxy_arch  # noqa: E402
from tests.test_targets import TARGETS, hf_config, hf_param_count  # noqa: E402  (the published configs)

RESULTS = REPO / "benchmarks" / "results" / "targets_cpu.txt"
BYTE_LEVEL = ("gpt_1b", "gpt_1b_32k")
DEFAULT = "llama3.2_1b_32k"


def knob_ratios(target: str) -> dict[str, float]:
    """Ratios to dense of the published knobs, of sharing half the layers, and of a 512-token window + 16 globals."""
    arch, _ = load_target(target)
    published = estimate(published_arch(target), target=target)
    sharing = estimate({"sharing": "cycle", "unique_layers": arch.n_layers // 2}, target=target)
    window = estimate({"attention": "local_global", "window": 512, "global_tokens": 16}, target=target,
                      hardware="h100_sxm")
    return {"published_params": published.unique_params_ratio, "published_flops": published.flops_ratio,
            "sharing_params": sharing.unique_params_ratio, "window_flops": window.flops_ratio,
            "window_time": window.time_ratio}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="print only, write nothing")
    args = parser.parse_args()
    lines: list[str] = []

    def emit(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    import transformers

    emit(f"# benchmarks/targets.py on {platform.node()} ({os.cpu_count()} cores, shared), torch {torch.__version__}, "
         f"transformers {transformers.__version__}, {now}")
    emit("published: the target with the knobs of its `published:` mapping (GQA / MQA; Mistral: window 4096 in "
         "every layer; Gemma 3: window 512 in 5 of every 6 layers); transformers: sum(p.numel()) of "
         "AutoModelForCausalLM.from_config(published config) on the meta device")
    emit("ratios to the dense baseline (MHA, dense attention, no sharing, fp32): params = unique parameters; "
         "sharing = cycle over half the layers; window = 512-token window + 16 global tokens (FLOPs, and modelled "
         "H100 SXM step time)\n")
    emit("| target | context | params (nas.cost) | params (transformers) | equal | embedding share | published: "
         "params / FLOPs | sharing: params | window 512: FLOPs / H100 time |")
    emit("|---|---:|---:|---:|---|---:|---:|---:|---:|")
    matched, ratios = 0, {}
    for target in [*TARGETS, *BYTE_LEVEL]:
        arch = published_arch(target)
        ours = param_counts(arch)
        embed = ours["components"]["embedding"]["unique"] + ours["components"]["unembedding"]["unique"]
        if target in TARGETS:
            theirs = hf_param_count(hf_config(TARGETS[target]))
            equal = ours["unique"] == ours["total"] == theirs
            matched += equal
            hf, eq = f"{theirs:,}", "yes" if equal else "NO"
        else:
            hf, eq = "(byte-level)", "-"
        r = ratios[target] = knob_ratios(target)
        emit(f"| {target} | {arch.seq_len:,} | {ours['unique']:,} | {hf} | {eq} | {embed / ours['unique']:.3f} | "
             f"{r['published_params']:.3f} / {r['published_flops']:.3f} | {r['sharing_params']:.3f} | "
             f"{r['window_flops']:.3f} / {r['window_time']:.3f} |")
    emit("\n## The sparse_attn space's range (windows 4..16 of the tiny_2m proxy's 64 positions, as a share of the "
         "context) on each 32k target: FLOPs ratio to dense")
    emit("| target | window 4 of 64 | window 16 of 64 + 4 global tokens, gated |\n|---|---:|---:|")
    proxy = load_proxy("tiny_2m")
    ends = [{"attention": "local_global", "window": 4, "global_tokens": 0},
            {"attention": "local_global", "window": 16, "global_tokens": 4, "gate": "dynamic"}]
    for target in [t for t in [*TARGETS, *BYTE_LEVEL] if load_target(t)[0].seq_len == 32768]:
        coster = Coster(target)
        emit(f"| {target} | " + " | ".join(f"{coster.estimate(proxy_arch(k, proxy)).flops_ratio:.3f}" for k in ends)
             + " |")
    d = ratios[DEFAULT]
    emit(f"\ntargets params_match={matched}/{len(TARGETS)} sharing_params_ratio={d['sharing_params']:.3f} "
         f"window512_flops_ratio={d['window_flops']:.3f} gqa_params_ratio={d['published_params']:.3f}")
    if not args.quick:
        RESULTS.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
