"""The proxy trainer: one small model, trained on a task for a token budget, reported at geometric rungs.

`train_proxy` returns an iterator of RungReport; the caller stops a run early by not iterating further
(that is how the search prunes). A NaN or inf training loss raises NonFiniteLoss; the reports already
yielded are the partial learning curve. `python -m nas.evaluation.proxy arch.attention=local_global proxy=tiny task=lm`
runs one trial from the command line (Hydra, conf/proxy_run.yaml).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from tqdm import tqdm

from nas.checks import check_int, check_recipe
from nas.device import resolve_device
from nas.evaluation.data import TaskData, TaskSpec, load_task
from nas.evaluation.optim import lr_at, seeded_start, set_lr
from nas.evaluation.scoring import NonFiniteLoss, RungReport, batch_to, evaluate, quality, train_loss
from nas.knobs import carry
from nas.model import ArchConfig, TransformerLM
from nas.model.config import POSITIONS, Positions
from nas.model.precision import AdaptivePrecision
from nas.profiles import hydra_entry, read_profile, strict_from_dict

Evaluation = Literal["scratch", "inherit"]
EVALUATIONS: tuple[str, ...] = get_args(Evaluation)
GateInit = Literal["pass_through", "default"]


@dataclass
class ProxySpec:
    """Size and training recipe of a proxy model (conf/proxy/*.yaml)."""

    name: str  # every size and recipe field comes from its conf/proxy/*.yaml: no defaults to contradict one
    n_layers: int
    d_model: int
    n_heads: int
    ffn_mult: float
    seq_len: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_steps: int
    min_lr_ratio: float  # cosine decay ends at lr * min_lr_ratio
    grad_clip: float
    budget_tokens: int
    rungs: int  # evaluations at steps total / rung_base**k, k = rungs-1 .. 0
    rung_base: float
    eval_batches: int
    positions: Positions = "rope"  # the model family's position encoding (ArchConfig.positions)
    min_context: int | None = None  # multi-fidelity along context: rung phases train at growing lengths from here
    # evaluation: scratch (a model of the trial's knobs trained from its init) or inherit (the space's dense parent,
    # trained once on parent_budget_tokens and cached, converted to the knobs by nas.evaluation.inherit and trained for
    # budget_tokens on the task loss + distill_kl_weight * KL(parent || trial) at distill_temperature)
    evaluation: Evaluation = "scratch"
    parent_budget_tokens: int = 4_194_304
    parent_lr: float | None = None  # None = lr
    parent_warmup_steps: int = 30
    distill_kl_weight: float = 0.0
    distill_temperature: float = 1.0
    gate_init: GateInit = "pass_through"  # a converted gate: pass the parent's attention through, or the model's init
    seeds: int = 1  # a search trial's quality is the mean of this many seeds (nas.search.runner.ProxyRunner)
    # inherit from a local transformers checkpoint (hf:DIR, `parent=hf:DIR` on the command line) instead of training
    # one: the model sizes and vocabulary are the checkpoint's (n_layers, d_model, n_heads, ffn_mult here are unused),
    # the corpus is read through its tokenizer.json (bpb terms are then bits per token), its digest its content
    parent: str | None = None

    def context_at(self, phase: int, phases: int) -> int:
        """Training length of rung phase `phase` of `phases`: seq_len halved per remaining rung, >= min_context."""
        if self.min_context is None:
            return self.seq_len
        return max(self.min_context, self.seq_len >> (phases - 1 - phase))

    def __post_init__(self) -> None:
        for key in ("n_layers", "d_model", "n_heads", "seq_len", "batch_size", "budget_tokens", "rungs",
                    "eval_batches", "seeds"):
            check_int(f"proxy.{key}", getattr(self, key))
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"proxy.warmup_steps={self.warmup_steps!r} is invalid: expected an integer >= 0")
        if isinstance(self.ffn_mult, bool) or not isinstance(self.ffn_mult, (int, float)) or self.ffn_mult <= 0:
            raise ValueError(f"proxy.ffn_mult={self.ffn_mult!r} is invalid: expected a number > 0")
        check_recipe("proxy.", self.lr, self.min_lr_ratio, self.grad_clip, self.weight_decay)
        if self.min_context is not None and not (isinstance(self.min_context, int) and
                                                 1 <= self.min_context <= self.seq_len and
                                                 self.seq_len % self.min_context == 0):
            raise ValueError(f"proxy.min_context={self.min_context!r} is invalid: expected null or an integer that "
                             f"divides seq_len={self.seq_len}")
        if self.positions not in POSITIONS:
            raise ValueError(f"proxy.positions={self.positions!r} is invalid: expected one of {', '.join(POSITIONS)}")
        if not self.rung_base > 1.0:
            raise ValueError(f"proxy.rung_base={self.rung_base!r} is invalid: expected a number > 1")
        if self.evaluation not in EVALUATIONS:
            raise ValueError(f"proxy.evaluation={self.evaluation!r} is invalid: "
                             f"expected one of {', '.join(EVALUATIONS)}")
        if self.gate_init not in get_args(GateInit):
            raise ValueError(f"proxy.gate_init={self.gate_init!r} is invalid: expected pass_through or default")
        check_int("proxy.parent_budget_tokens", self.parent_budget_tokens)
        if not isinstance(self.parent_warmup_steps, int) or self.parent_warmup_steps < 0:
            raise ValueError(f"proxy.parent_warmup_steps={self.parent_warmup_steps!r} is invalid: "
                             "expected an integer >= 0")
        for key, low in (("parent_lr", 0.0), ("distill_temperature", 0.0)):
            value = getattr(self, key)
            if value is not None and not (isinstance(value, (int, float)) and value > low):
                raise ValueError(f"proxy.{key}={value!r} is invalid: expected a number > {low}")
        if not (isinstance(self.distill_kl_weight, (int, float)) and self.distill_kl_weight >= 0):
            raise ValueError(f"proxy.distill_kl_weight={self.distill_kl_weight!r} is invalid: expected a number >= 0")
        if self.parent is not None:
            if self.evaluation != "inherit":
                raise ValueError(f"proxy.parent={self.parent}: a parent checkpoint needs proxy.evaluation=inherit "
                                 f"(it is {self.evaluation})")
            from nas.model.hf import hf_parent_arch, hf_tokenizer_vocab

            vocab = hf_tokenizer_vocab(self.parent)
            arch = hf_parent_arch(self.parent, self.seq_len)
            if vocab > arch.vocab_size:
                raise ValueError(f"parent={self.parent}: its tokenizer.json has {vocab} tokens, more than the "
                                 f"model's vocab_size={arch.vocab_size}")

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ProxySpec":
        """Build from a plain dict; unknown keys raise ValueError naming them."""
        return strict_from_dict(cls, data, "proxy.")


def load_proxy(name: str) -> ProxySpec:
    """A proxy size from conf/proxy/<name>.yaml."""
    _, data = read_profile("proxy", name)
    data.setdefault("name", name)
    return ProxySpec.from_dict(data)


def proxy_sizes(proxy: ProxySpec) -> dict[str, Any]:
    """The ArchConfig size fields of a proxy (byte vocabulary), or of its parent checkpoint (proxy.parent)."""
    if proxy.parent is not None:
        from nas.knobs import sizes_of
        from nas.model.hf import hf_parent_arch

        return sizes_of(hf_parent_arch(proxy.parent, proxy.seq_len))
    return {"vocab_size": 256, "seq_len": proxy.seq_len, "n_layers": proxy.n_layers, "d_model": proxy.d_model,
            "n_heads": proxy.n_heads, "ffn_mult": proxy.ffn_mult, "positions": proxy.positions}


def proxy_arch(knobs: dict[str, Any] | ArchConfig, proxy: ProxySpec) -> ArchConfig:
    """The knobs of an arch (or of a knob dict, in the proxy's units) at the proxy's size (nas.knobs.carry)."""
    what = f"proxy {proxy.name!r}" + (f" with parent={proxy.parent}" if proxy.parent is not None else "")
    return carry(knobs, proxy_sizes(proxy), what=what)


def at_proxy_size(arch: ArchConfig | dict[str, Any], proxy: ProxySpec) -> bool:
    """Whether `arch` is an ArchConfig at the proxy's sizes already (built by the driver: nothing to carry)."""
    return isinstance(arch, ArchConfig) and all(getattr(arch, k) == v for k, v in proxy_sizes(proxy).items())


def rung_steps(total_steps: int, rungs: int, base: float) -> list[int]:
    """Geometrically spaced evaluation steps ending at total_steps (duplicates merged)."""
    return sorted({max(1, round(total_steps / base**k)) for k in range(rungs)})


def train_proxy(
    arch: ArchConfig | dict[str, Any],
    proxy: ProxySpec | str,
    task: TaskSpec | str,
    *,
    budget_tokens: int | None = None,
    seed: int = 0,
    threads: int = 1,
    device: str = "auto",
    progress: bool = False,
    cache_dir: str | Path | None = None,
    model_sink: Callable[[TransformerLM], None] | None = None,
    parent_dir: str | Path | None = None,
) -> Iterator[RungReport]:
    """Train the arch's knobs at proxy size on the task; yield a RungReport at each rung (the last has final=True).

    Inputs are checked here, before the first report; NaN / inf training loss raises NonFiniteLoss.
    `model_sink`, when given, receives the model once it is built (to inspect it after training).
    With proxy.evaluation=inherit the dense parent is trained first unless `parent_dir` (default
    trials_db/parents) holds it already (nas.evaluation.parent).
    """
    proxy = load_proxy(proxy) if isinstance(proxy, str) else proxy
    task = load_task(task) if isinstance(task, str) else task
    # the driver's own arch, as it is
    cfg = arch if isinstance(arch, ArchConfig) and at_proxy_size(arch, proxy) else proxy_arch(arch, proxy)
    budget = proxy.budget_tokens if budget_tokens is None else budget_tokens
    total_steps = budget // proxy.tokens_per_step
    if total_steps < 1:
        raise ValueError(f"budget_tokens={budget} is too small for one rung: one step of proxy {proxy.name!r} "
                         f"is batch_size*seq_len={proxy.tokens_per_step} tokens")
    if task.uses_mqar and task.mqar.vocab > cfg.vocab_size:
        raise ValueError(f"task.mqar.vocab={task.mqar.vocab} exceeds the model vocabulary ({cfg.vocab_size})")
    check_int("threads", threads)
    tokenizer = None
    if proxy.parent is not None:
        from nas.model.hf import hf_parent_folder

        tokenizer = hf_parent_folder(proxy.parent) / "tokenizer.json"
    data = {c: TaskData(task, c, cache_dir=cache_dir, tokenizer=tokenizer)
            for c in {proxy.context_at(k, proxy.rungs) for k in range(proxy.rungs)} | {proxy.seq_len}}
    if proxy.evaluation == "inherit":
        from nas.evaluation.parent import inherit_run

        return inherit_run(cfg, proxy, task, data, total_steps, seed, threads, resolve_device(device), progress,
                           model_sink, parent_dir)
    return _run(cfg, proxy, data, total_steps, seed, threads, resolve_device(device), progress, model_sink)


def _run(cfg: ArchConfig, proxy: ProxySpec, data: dict[int, TaskData], total_steps: int, seed: int, threads: int,
         device: torch.device, progress: bool, model_sink: Callable[[TransformerLM], None] | None,
         start: Callable[[], TransformerLM] | None = None, teacher: TransformerLM | None = None,
         parent: str | None = None) -> Iterator[RungReport]:
    """The training loop: from TransformerLM(cfg), or from `start()` (a converted parent) distilled from `teacher`
    (KL weight and temperature from the proxy) when given; every report carries `parent` (the parent's digest)."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    bar = tqdm(total=total_steps, disable=not progress, desc=f"proxy {proxy.name} {cfg.attention}", leave=False)
    try:
        model, optimizer, gen = seeded_start(cfg, seed, device, proxy.lr, proxy.weight_decay, build=start)
        if model_sink is not None:
            model_sink(model)
        val_set = data[proxy.seq_len].val_set(proxy.eval_batches, proxy.batch_size)  # always the full context
        rungs = rung_steps(total_steps, proxy.rungs, proxy.rung_base)
        contexts = [proxy.context_at(k + proxy.rungs - len(rungs), proxy.rungs) for k in range(len(rungs))]
        phase = 0  # rung phase of the current step: it trains at contexts[phase] positions
        adaptive = AdaptivePrecision.from_config(cfg.precision) if cfg.precision.ffn == "adaptive" else None
        began, loss_sum, loss_count = time.perf_counter(), 0.0, 0
        distill = teacher is not None and proxy.distill_kl_weight > 0
        for step in range(1, total_steps + 1):
            lr = lr_at(step, proxy.lr, proxy.warmup_steps, total_steps, proxy.min_lr_ratio)
            set_lr(optimizer, lr)
            phase += step > rungs[phase]
            context = contexts[phase]
            batch = batch_to(data[context].batch(proxy.batch_size * proxy.seq_len // context, gen), device)
            logits = model(batch.x)
            loss = train_loss(logits, batch)
            if distill:
                loss = loss + proxy.distill_kl_weight * distill_loss(logits, teacher, batch.x,
                                                                     proxy.distill_temperature)
            value = loss.item()
            if not math.isfinite(value):
                raise NonFiniteLoss(step, value)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), proxy.grad_clip)
            optimizer.step()
            loss_sum, loss_count = loss_sum + value, loss_count + 1
            if adaptive is not None and adaptive.observe(step, value):
                model.set_ffn_format(adaptive.target_format)
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{value:.3f}")
            if step in rungs:
                metrics = evaluate(model, val_set, device)
                primary = "byte_acc" if "byte_acc" in metrics else "mqar_acc"
                report = RungReport(
                    rung=rungs.index(step), step=step, tokens=step * proxy.tokens_per_step,
                    wall_s=time.perf_counter() - began, lr=lr, train_loss=loss_sum / loss_count,
                    val_loss=metrics.get("lm_loss", 0.0) + metrics.get("mqar_loss", 0.0),
                    val_bpb=metrics.get("bpb"), val_acc=metrics[primary], metrics=metrics,
                    gate_stats=model.gate_stats() if cfg.gate == "dynamic" else {},
                    precision_switch_step=adaptive.switch_step if adaptive is not None else None,
                    final=step == total_steps, parent=parent,
                )
                loss_sum, loss_count = 0.0, 0
                bar.set_postfix(loss=f"{value:.3f}", val_loss=f"{report.val_loss:.3f}")
                yield report
    finally:
        bar.close()
        torch.set_num_threads(previous_threads)


def distill_loss(logits: torch.Tensor, teacher: TransformerLM, x: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(teacher || student) of the next-byte distributions at temperature T, averaged over positions."""
    with torch.no_grad():
        target = torch.log_softmax(teacher(x).float() / temperature, -1)
    student = torch.log_softmax(logits.float() / temperature, -1)
    kl = torch.nn.functional.kl_div(student.flatten(0, 1), target.flatten(0, 1), log_target=True, reduction="batchmean")
    return temperature**2 * kl


def _format(report: RungReport) -> str:
    """One progress line per rung."""
    extra = "".join(f" {k}={v:.4f}" for k, v in report.metrics.items())
    switch = f" fp8_from={report.precision_switch_step}" if report.precision_switch_step is not None else ""
    return (f"rung {report.rung} step={report.step} tokens={report.tokens} wall_s={report.wall_s:.1f} "
            f"train_loss={report.train_loss:.4f} val_loss={report.val_loss:.4f}{extra}{switch}")


def _knobs_from_conf(arch: dict[str, Any]) -> dict[str, Any]:
    """The arch node of proxy_run.yaml without its nulls (null = the ArchConfig default)."""
    knobs = {k: v for k, v in arch.items() if v is not None and k != "precision"}
    precision = {k: v for k, v in (arch.get("precision") or {}).items() if v is not None}
    if precision:
        knobs["precision"] = precision
    return knobs


def run_from_config(plain: dict[str, Any]) -> None:
    """One proxy run from a composed conf/proxy_run.yaml (plain dict): one line per rung, then the quality."""
    proxy = ProxySpec.from_dict(plain["proxy"])
    task = TaskSpec.from_dict(plain["task"])
    knobs = _knobs_from_conf(plain["arch"])
    reports = train_proxy(knobs, proxy, task, budget_tokens=plain["budget_tokens"], seed=plain["seed"],
                          threads=plain["threads"], device=plain["device"], progress=plain["progress"])
    print(f"arch: {proxy_arch(knobs, proxy).to_dict()}")
    for report in reports:
        print(_format(report), flush=True)
    print(f"quality ({', '.join(f'{w:g}*{t}' for t, w in task.objective.items())}) = {quality(report, task):.4f}")


def register_arch_knobs() -> None:
    """The `arch` node of conf/proxy_run.yaml: every knob of ArchConfig's registry, null (= its default)."""
    from dataclasses import fields

    from hydra.core.config_store import ConfigStore

    from nas.model.config import KNOB_FIELDS, PrecisionConfig

    node: dict[str, Any] = {k: None for k in KNOB_FIELDS if k != "precision"}
    node["precision"] = {f.name: None for f in fields(PrecisionConfig)}
    ConfigStore.instance().store(name="arch_knobs", node=node)


def main() -> None:
    """`python -m nas.evaluation.proxy`: one proxy run from conf/proxy_run.yaml; bad input ends as one line, exit 2."""
    hydra_entry("proxy_run", run_from_config, prepare=register_arch_knobs)


if __name__ == "__main__":
    main()
