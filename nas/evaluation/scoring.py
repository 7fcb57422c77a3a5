"""The training objective: the task's loss, the validation metrics, the quality a study ranks, rung reports.

Shared by the proxy trainer (nas.evaluation.proxy) and the main trainer (nas.train): one definition of what a model is
trained on and scored by.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F

from nas.evaluation.data import IGNORE, Batch, TaskSpec
from nas.model import TransformerLM

_LN2 = math.log(2.0)


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or inf; the run cannot continue."""

    def __init__(self, step: int, value: float) -> None:
        super().__init__(f"training loss is {value} at step {step}: "
                         "the run diverged (lower proxy.lr or check the arch)")
        self.step, self.value = step, value


@dataclass
class RungReport:
    """Metrics of a proxy run at one rung.

    val_loss is the task's validation loss (LM cross-entropy in nats, MQAR cross-entropy on the queries,
    their sum for mixed); val_bpb the LM bits per byte (None without LM data); val_acc the next-byte
    accuracy for lm / mixed and the MQAR accuracy for mqar. metrics holds every measured term.
    """

    rung: int
    step: int
    tokens: int
    wall_s: float
    lr: float
    train_loss: float  # mean training loss since the previous rung
    val_loss: float
    val_bpb: float | None
    val_acc: float
    metrics: dict[str, float]
    gate_stats: dict[str, list[list[float]]]
    precision_switch_step: int | None
    final: bool
    parent: str | None = None  # inherit evaluation: the digest of the dense parent the model was converted from

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def quality(report: RungReport | dict[str, Any], task: TaskSpec) -> float:
    """The task's objective (lower is better): sum of weight * term over task.objective.

    Terms: bpb = validation bits per byte; bpb_late = the same over the second half of the positions;
    byte_error = 1 - next-byte accuracy; mqar_error = 1 - MQAR accuracy.
    """
    metrics = report.metrics if isinstance(report, RungReport) else report["metrics"]
    terms = {"bpb": metrics.get("bpb"), "bpb_late": metrics.get("bpb_late"),
             "byte_error": 1.0 - metrics["byte_acc"] if "byte_acc" in metrics else None,
             "mqar_error": 1.0 - metrics["mqar_acc"] if "mqar_acc" in metrics else None}
    total = 0.0
    for term, weight in task.objective.items():
        value = terms[term]
        if value is None:
            raise ValueError(f"task.objective.{term}: the report has no such metric (task.kind={task.kind!r})")
        total += weight * value
    return total


def _losses(logits: torch.Tensor, batch: Batch, accuracy: bool = False) -> dict[str, tuple[torch.Tensor, ...]]:
    """Per part (LM rows, MQAR rows): summed cross-entropy, label count and, if asked, correct predictions."""
    out = {}
    for part, rows in (("lm", slice(None, batch.n_lm)), ("mqar", slice(batch.n_lm, None))):
        y = batch.y[rows].reshape(-1)
        if y.numel() == 0:
            continue
        lg = logits[rows].reshape(-1, logits.size(-1)).float()
        mask = y != IGNORE
        nll = F.cross_entropy(lg, y, ignore_index=IGNORE, reduction="sum")
        out[part] = (nll, mask.sum()) + (((lg.argmax(-1)[mask] == y[mask]).sum(),) if accuracy else ())
    return out


def train_loss(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """The task's training loss: the sum over parts of each part's mean cross-entropy."""
    # a batch has at least one part, so the sum is a tensor (sum's start 0 is never returned)
    return cast(torch.Tensor, sum(nll / count for nll, count in _losses(logits, batch).values()))


def _buckets(n: int, first: int) -> list[tuple[int, int]]:
    """Doubling ranges [0 or first, 2*first), [2*first, 4*first), ... covering [0, n)."""
    out, lo, hi = [], 0, first
    while lo < n:
        out.append((lo, min(hi, n)))
        lo, hi = hi, 2 * hi
    return out


@torch.no_grad()
def evaluate(model: TransformerLM, val_set: list[Batch], device: torch.device) -> dict[str, float]:
    """Validation metrics over the fixed set.

    LM: lm_loss, bpb, byte_acc, bpb_late (positions in the second half of the context) and bpb_pos{lo} per
    doubling position range; MQAR: mqar_loss, mqar_acc and mqar_acc_dist{lo} per doubling key-to-query distance
    range [lo, 2lo) (how far back the model can recall).
    """
    model.eval()
    sums: dict[str, list[float]] = {}
    pos_nll: torch.Tensor | None = None
    dist_hits: dict[int, list[float]] = {}
    for batch in val_set:
        batch = batch_to(batch, device)
        logits = model(batch.x)
        for part, values in _losses(logits, batch, accuracy=True).items():
            acc = sums.setdefault(part, [0.0, 0.0, 0.0])
            for i, v in enumerate(values):
                acc[i] += float(v)
        if batch.n_lm:
            nll = F.cross_entropy(logits[: batch.n_lm].transpose(1, 2).float(), batch.y[: batch.n_lm],
                                  reduction="none")  # (B_lm, S)
            pos_nll = nll.sum(0) if pos_nll is None else pos_nll + nll.sum(0)
            sums.setdefault("lm_rows", [0.0])[0] += batch.n_lm
        if batch.dist is not None:
            y, dist = batch.y[batch.n_lm :], batch.dist
            mask = y != IGNORE
            hit = (logits[batch.n_lm :].argmax(-1) == y)[mask].tolist()
            for d, h in zip(dist[mask].tolist(), hit):
                bucket = 1 << (d.bit_length() - 1)  # [2^k, 2^(k+1))
                counts = dist_hits.setdefault(bucket, [0.0, 0.0])
                counts[0], counts[1] = counts[0] + h, counts[1] + 1
    model.train()
    metrics: dict[str, float] = {}
    if "lm" in sums:
        lm_nll, lm_count, lm_correct = sums["lm"]
        metrics.update(lm_loss=lm_nll / lm_count, bpb=lm_nll / lm_count / _LN2, byte_acc=lm_correct / lm_count)
        assert pos_nll is not None, "an lm part accumulates pos_nll"
        rows, S = sums["lm_rows"][0], pos_nll.numel()
        metrics["bpb_late"] = float(pos_nll[S // 2 :].sum()) / (rows * (S - S // 2)) / _LN2
        for lo, hi in _buckets(S, 8):
            metrics[f"bpb_pos{lo}"] = float(pos_nll[lo:hi].sum()) / (rows * (hi - lo)) / _LN2
    if "mqar" in sums:
        mqar_nll, mqar_count, mqar_correct = sums["mqar"]
        metrics.update(mqar_loss=mqar_nll / mqar_count, mqar_acc=mqar_correct / mqar_count)
        for lo in sorted(dist_hits):
            metrics[f"mqar_acc_dist{lo}"] = dist_hits[lo][0] / dist_hits[lo][1]
    return metrics


def batch_to(batch: Batch, device: torch.device) -> Batch:
    """The batch on a device."""
    return Batch(batch.x.to(device), batch.y.to(device), batch.n_lm,
                 None if batch.dist is None else batch.dist.to(device))
