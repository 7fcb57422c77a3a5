"""Proxy-trainer throughput on CPU: tokens/s of nas.evaluation.proxy against a minimal plain training loop of the same
model.

    python benchmarks/proxy.py                 # recorded run (quiet machine, ~3 min)
    python benchmarks/proxy.py --quick         # smoke run

The proxy figure includes everything a trial pays for: batches from the memory-mapped corpus, the lr
schedule, gradient clipping, and the validation passes (a run cut short of the size's budget keeps the
size's evaluation cost per training step). The plain loop is AdamW on random
bytes with nothing else. A third table compares dense and local_global proxies at a long sequence.
Last line: `proxy tiny_tok_s=... ratio_vs_plain=... small_tok_s=... small_ratio_vs_plain=... lg_vs_dense_S=...`.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from dataclasses import replace

import torch
import torch.nn.functional as F

from nas.evaluation.proxy import ProxySpec, load_proxy, proxy_arch, train_proxy
from nas.model import TransformerLM


def plain_tok_s(proxy: ProxySpec, steps: int, seed: int = 0) -> float:
    """Tokens/s of the minimal loop: same dense model and AdamW, random bytes, no schedule, no eval."""
    torch.manual_seed(seed)
    model = TransformerLM(proxy_arch({}, proxy))
    optimizer = torch.optim.AdamW(model.parameters(), lr=proxy.lr, weight_decay=proxy.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    B, S = proxy.batch_size, proxy.seq_len
    start = 0.0
    for step in range(steps + 2):
        if step == 2:  # two warm-up steps, untimed
            start = time.perf_counter()
        chunk = torch.randint(0, 256, (B, S + 1), generator=gen)
        logits = model(chunk[:, :-1])
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), chunk[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return steps * B * S / (time.perf_counter() - start)


def truncated(proxy: ProxySpec, steps: int) -> ProxySpec:
    """The proxy cut to `steps` steps, keeping the share of evaluation per training step of its full budget."""
    full_steps = proxy.budget_tokens // proxy.tokens_per_step
    if steps >= full_steps:
        return proxy
    eval_batches = max(1, round(proxy.rungs * proxy.eval_batches * steps / full_steps))
    return replace(proxy, budget_tokens=steps * proxy.tokens_per_step, rungs=1, eval_batches=eval_batches)


def proxy_tok_s(knobs: dict, proxy: ProxySpec, steps: int, cache_dir: str) -> float:
    """Tokens/s of train_proxy over a run of `steps` steps (its evaluations included)."""
    proxy = truncated(proxy, steps)
    list(train_proxy(knobs, proxy, "lm", budget_tokens=2 * proxy.tokens_per_step, cache_dir=cache_dir))  # warm-up
    start = time.perf_counter()
    reports = list(train_proxy(knobs, proxy, "lm", budget_tokens=steps * proxy.tokens_per_step, cache_dir=cache_dir))
    return reports[-1].tokens / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few steps: a smoke run, not a measurement")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--long-seq", type=int, default=2048)
    parser.add_argument("--window", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    steps = {"tiny": 16, "small": 4, "long": 3} if args.quick else {"tiny": 256, "small": 64, "long": 16}
    cache_dir = tempfile.mkdtemp(prefix="nas-bench-")
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, threads={args.threads}")

    print(f"{'size':<6} {'steps':>5} {'tokens/step':>11} {'proxy tok/s':>12} {'plain tok/s':>12} {'ratio':>6}")
    figures = {}
    for name in ("tiny", "small"):
        proxy = load_proxy(name)
        plain = plain_tok_s(proxy, steps[name])
        ours = proxy_tok_s({}, proxy, steps[name], cache_dir)
        figures[name] = (ours, ours / plain)
        print(f"{name:<6} {steps[name]:>5} {proxy.tokens_per_step:>11} {ours:>12.0f} {plain:>12.0f} "
              f"{ours / plain:>6.2f}")

    long = replace(load_proxy("tiny"), seq_len=args.long_seq, batch_size=2, rungs=1, eval_batches=1)
    print(f"\nseq_len={args.long_seq}, tiny width, batch 2: dense vs local_global "
          f"(window {args.window}, 4 global tokens)")
    dense = proxy_tok_s({}, long, steps["long"], cache_dir)
    local = proxy_tok_s({"attention": "local_global", "window": args.window, "global_tokens": 4}, long, steps["long"],
                        cache_dir)
    print(f"dense {dense:.0f} tok/s   local_global {local:.0f} tok/s   speed-up {local / dense:.2f}x")
    print(f"proxy tiny_tok_s={figures['tiny'][0]:.0f} ratio_vs_plain={figures['tiny'][1]:.2f} "
          f"small_tok_s={figures['small'][0]:.0f} small_ratio_vs_plain={figures['small'][1]:.2f} "
          f"lg_vs_dense_{args.long_seq}={local / dense:.2f}")


if __name__ == "__main__":
    main()
