"""Corpora and synthetic tasks: byte-level LM on a real corpus, MQAR recall, and their quality metrics.

The default corpus is the running Python's standard-library source (site-packages excluded), split into
train and validation by file. A corpus is read once and cached as memory-mapped uint8 arrays under
$NAS_CACHE_DIR (default ~/.cache/nas), keyed by the sha256 of its content and split. Read through a tokenizer.json
(a Hugging Face parent's), it becomes int32 token ids cached by corpus key and tokenizer digest (tokenize_corpus).
"""

from __future__ import annotations

import hashlib
import math
import os
import sysconfig
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch

from nas.profiles import read_profile, strict_from_dict

TaskKind = Literal["lm", "mqar", "mixed"]
TASK_KINDS: tuple[str, ...] = get_args(TaskKind)
OBJECTIVE_TERMS = ("bpb", "bpb_late", "byte_error", "mqar_error")  # bits/byte (all / second-half positions),
# 1 - next-byte accuracy, 1 - MQAR recall accuracy
IGNORE = -100  # label of positions that carry no target
VAL_SEED = 0x5EED_0F_5A11  # the validation set is the same for every trial and every seed
_EXCLUDED_DIRS = ("site-packages", "dist-packages", "__pycache__")
_CACHE_VERSION = b"nas-corpus-v1"


# ---- corpus --------------------------------------------------------------------------------


@dataclass
class Corpus:
    """A byte corpus split into train and validation (uint8 arrays, memory-mapped from the cache)."""

    source: str
    key: str  # sha256 of the split content
    train: np.ndarray
    val: np.ndarray


def default_cache_dir() -> Path:
    """$NAS_CACHE_DIR, else ~/.cache/nas."""
    return Path(os.environ.get("NAS_CACHE_DIR") or Path.home() / ".cache" / "nas")


def stdlib_root() -> Path:
    """The running Python's standard-library folder."""
    return Path(sysconfig.get_paths()["stdlib"])


def _walk(root: Path, suffix: str | None) -> list[Path]:
    """Files under root in sorted order, skipping hidden entries and package-install folders."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _EXCLUDED_DIRS and not d.startswith("."))
        found += [Path(folder) / f for f in sorted(files)
                  if not f.startswith(".") and (suffix is None or f.endswith(suffix))]
    return found


def _is_val(rel: str, val_pct: int) -> bool:
    """Deterministic file split: sha256 of the relative path, mod 100, below val_pct."""
    return int.from_bytes(hashlib.sha256(rel.encode()).digest()[:8], "little") % 100 < val_pct


def _corpus_files(path: Path | None) -> tuple[Path, list[Path], str]:
    """(root, files, description) of a corpus path (None = the standard library's *.py files)."""
    if path is None:
        root = stdlib_root()
        return root, _walk(root, ".py"), f"stdlib:{root}"
    if not path.exists():
        raise ValueError(f"task.corpus={str(path)!r} does not exist: expected a text file or a folder of text files")
    if path.is_file():
        return path.parent, [path], str(path)
    return path, _walk(path, None), str(path)


def _fingerprint(root: Path, files: list[Path], val_pct: int) -> str:
    """Cheap identity of a corpus on disk (paths, sizes, mtimes): finds the content key without reading."""
    h = hashlib.sha256(f"{root.resolve()}|{val_pct}".encode())
    for f in files:
        st = f.stat()
        h.update(f"|{f.relative_to(root)}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()


def _read_split(root: Path, files: list[Path], desc: str, val_pct: int) -> tuple[bytes, bytes]:
    """(train, val) bytes: text files split by file; a single file (or a one-sided split) by its tail."""
    train: list[bytes] = []
    val: list[bytes] = []
    single = len(files) == 1
    for f in files:
        data = f.read_bytes()
        if b"\0" in data:
            if single:
                raise ValueError(f"task.corpus={desc!r} is a binary file (contains NUL bytes): expected text")
            continue  # binary files inside a folder are skipped
        if data:
            (val if _is_val(str(f.relative_to(root)), val_pct) else train).append(data)
    if not train and not val:
        raise ValueError(f"task.corpus={desc!r} holds no text: expected a non-empty text file or folder of text files")
    if not train or not val:
        whole = b"".join(train + val)
        n_val = max(1, len(whole) * val_pct // 100)
        if len(whole) < 2:
            raise ValueError(f"task.corpus={desc!r} has {len(whole)} byte(s): too short to split train/validation")
        return whole[:-n_val], whole[-n_val:]
    return b"".join(train), b"".join(val)


def _write_atomic(path: Path, data: bytes) -> None:
    """Write `path` whole or not at all: a temporary file of this writer's own (process and thread), renamed into
    place, so writers racing on one cache entry (trials in processes, or threads of one) never share a temp file."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


_LOADED: dict[tuple[str, str], Corpus] = {}


def load_corpus(path: str | Path | None = None, *, val_pct: int = 10, cache_dir: str | Path | None = None) -> Corpus:
    """Train/validation bytes of a text file or folder (None = the stdlib source), cached by content."""
    if not (isinstance(val_pct, int) and 1 <= val_pct <= 50):
        raise ValueError(f"task.val_pct={val_pct!r} is invalid: expected an integer in [1, 50]")
    root, files, desc = _corpus_files(None if path is None else Path(path).expanduser())
    if not files:
        raise ValueError(f"task.corpus={desc!r} holds no files: expected a non-empty text file or folder")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    store = cache / "corpus"
    fingerprint = _fingerprint(root, files, val_pct)
    memo = (str(cache.resolve()), fingerprint)
    if memo in _LOADED:
        return _LOADED[memo]
    index = store / "index" / fingerprint
    key = index.read_text().strip() if index.exists() else None
    if key is None or not (store / f"{key}.val.u8").exists():
        train, val = _read_split(root, files, desc, val_pct)
        h = hashlib.sha256(_CACHE_VERSION)
        for part in (train, val):
            h.update(len(part).to_bytes(8, "little"))
            h.update(part)
        key = h.hexdigest()
        index.parent.mkdir(parents=True, exist_ok=True)
        if not (store / f"{key}.val.u8").exists():
            _write_atomic(store / f"{key}.train.u8", train)
            _write_atomic(store / f"{key}.val.u8", val)  # written last: its presence marks a complete entry
        _write_atomic(index, key.encode())
    corpus = Corpus(
        source=desc,
        key=key,
        train=np.memmap(store / f"{key}.train.u8", dtype=np.uint8, mode="r"),
        val=np.memmap(store / f"{key}.val.u8", dtype=np.uint8, mode="r"),
    )
    _LOADED[memo] = corpus
    return corpus


_TOKENIZED: dict[tuple[str, str], Corpus] = {}


def tokenize_corpus(corpus: Corpus, tokenizer: str | Path, cache_dir: str | Path | None = None) -> Corpus:
    """The corpus as token ids of a tokenizers `tokenizer.json` (int32 arrays, no special tokens added), encoded
    once and cached under the corpus key and the tokenizer's sha256; the bytes are read as UTF-8 (invalid bytes
    replaced)."""
    from tokenizers import Tokenizer

    blob = Path(tokenizer).read_bytes()
    key = hashlib.sha256(b"nas-tokens-v1|" + corpus.key.encode() + b"|" + hashlib.sha256(blob).digest()).hexdigest()
    store = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / "corpus" / "tokens"
    memo = (str(store.resolve()), key)
    if memo not in _TOKENIZED:
        encoder = Tokenizer.from_str(blob.decode())
        for split in ("train", "val"):  # val written last: its presence marks a complete entry
            path = store / f"{key}.{split}.i32"
            if not path.exists():
                text = bytes(getattr(corpus, split)).decode("utf-8", errors="replace")
                ids = encoder.encode(text, add_special_tokens=False).ids
                path.parent.mkdir(parents=True, exist_ok=True)
                _write_atomic(path, np.asarray(ids, dtype=np.int32).tobytes())
        _TOKENIZED[memo] = Corpus(
            source=f"{corpus.source} (tokenized by {tokenizer})", key=key,
            train=np.memmap(store / f"{key}.train.i32", dtype=np.int32, mode="r"),
            val=np.memmap(store / f"{key}.val.i32", dtype=np.int32, mode="r"))
    return _TOKENIZED[memo]


def lm_batch(data: np.ndarray, batch_size: int, seq_len: int,
             gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows of a byte (or token id) array: inputs (B, S) and next-byte targets (B, S)."""
    offsets = torch.randint(0, len(data) - seq_len, (batch_size,), generator=gen).numpy()
    chunk = torch.from_numpy(data[offsets[:, None] + np.arange(seq_len + 1)].astype(np.int64))  # (B, S+1)
    return chunk[:, :-1], chunk[:, 1:]


# ---- MQAR ----------------------------------------------------------------------------------


@dataclass
class MQARSpec:
    """Multi-query associative recall (Zoology) with pairs at random positions and spread recall distances.

    Each of `num_pairs` key-value pairs is written at a random position; its key is queried once, `d` positions
    later, with d drawn log-uniformly from [min_distance, max_distance] (null = as far as the sequence allows).
    So recall accuracy falls with d for a model that cannot see that far, whatever sits in the prefix.
    """

    vocab: int = 16  # keys in [1, vocab/2), values in [vocab/2, vocab); 0 fills the gaps
    num_pairs: int = 2
    min_distance: int = 4  # key-to-query distance range (positions)
    max_distance: int | None = None

    def validate(self) -> None:
        if not (isinstance(self.vocab, int) and self.vocab >= 4 and self.vocab % 2 == 0):
            raise ValueError(f"task.mqar.vocab={self.vocab!r} is invalid: expected an even integer >= 4")
        half = self.vocab // 2
        if not (isinstance(self.num_pairs, int) and 1 <= self.num_pairs <= half - 1):
            raise ValueError(f"task.mqar.num_pairs={self.num_pairs!r} is invalid: "
                             f"expected an integer in [1, {half - 1}]")
        if not (isinstance(self.min_distance, int) and self.min_distance >= 2):
            raise ValueError(f"task.mqar.min_distance={self.min_distance!r} is invalid: expected an integer >= 2")
        if self.max_distance is not None and not (isinstance(self.max_distance, int)
                                                  and self.max_distance >= self.min_distance):
            raise ValueError(f"task.mqar.max_distance={self.max_distance!r} is invalid: expected null or an integer "
                             f">= min_distance={self.min_distance}")

    def min_seq_len(self) -> int:
        """Shortest sequence holding every pair and its query at the largest distance asked for."""
        return (self.max_distance or self.min_distance) + 2 + 4 * self.num_pairs

    def distance_range(self, seq_len: int) -> tuple[int, int]:
        """(shortest, longest) key-to-query distance at this sequence length."""
        return self.min_distance, min(self.max_distance or seq_len, seq_len - 2)


def mqar_batch(spec: MQARSpec, batch_size: int, seq_len: int, gen: torch.Generator
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MQAR inputs (B, S), labels (B, S: the value at each query position, IGNORE elsewhere) and distances (B, S).

    A pair occupies positions p (key), p+1 (value); its query the positions p+d (key), p+d+1 (value), and the
    label sits at p+d. Positions are drawn until the four slots of each pair are free.
    """
    if seq_len < spec.min_seq_len():
        raise ValueError(f"task.mqar (num_pairs={spec.num_pairs}, max_distance={spec.max_distance}) needs "
                         f"seq_len >= {spec.min_seq_len()}; the proxy has seq_len={seq_len}")
    n, half = spec.num_pairs, spec.vocab // 2
    lo, hi = spec.distance_range(seq_len)
    B = batch_size
    keys = (torch.rand(B, half - 1, generator=gen).argsort(dim=1)[:, :n] + 1).tolist()  # distinct, in [1, half)
    values = (torch.rand(B, spec.vocab - half, generator=gen).argsort(dim=1)[:, :n] + half).tolist()
    draws = torch.rand(B, n, 64, 2, generator=gen).tolist()  # (distance, position) candidates per pair
    x = torch.zeros(B, seq_len, dtype=torch.long)
    y = torch.full((B, seq_len), IGNORE, dtype=torch.long)
    dist = torch.zeros(B, seq_len, dtype=torch.long)
    log_lo, log_span = math.log(lo), math.log(hi + 1) - math.log(lo)
    for b in range(B):
        used: set[int] = set()
        for i in range(n):
            for u, v in draws[b][i]:
                d = min(hi, int(math.exp(log_lo + u * log_span)))
                p = int(v * (seq_len - 1 - d))  # p + d + 1 <= seq_len - 1
                slots = (p, p + 1, p + d, p + d + 1)
                if d >= 2 and used.isdisjoint(slots):
                    break
            else:
                raise ValueError(f"task.mqar: could not place {n} pairs in seq_len={seq_len}: lower num_pairs")
            used.update(slots)
            k, v = keys[b][i], values[b][i]
            x[b, p], x[b, p + 1], x[b, p + d], x[b, p + d + 1] = k, v, k, v
            y[b, p + d], dist[b, p + d] = v, d
    return x, y, dist


# ---- tasks ---------------------------------------------------------------------------------


@dataclass
class TaskSpec:
    """What the proxy trains on and the quality objective (weights over OBJECTIVE_TERMS; lower is better)."""

    name: str = "lm"
    kind: TaskKind = "lm"
    corpus: str | None = None  # text file or folder; None = the stdlib source
    val_pct: int = 10
    mqar: MQARSpec = field(default_factory=MQARSpec)
    mqar_fraction: float = 0.5  # mixed: share of each batch's rows that are MQAR
    objective: dict[str, float] = field(default_factory=dict)  # empty = the kind's default

    def __post_init__(self) -> None:
        if isinstance(self.mqar, dict):
            self.mqar = MQARSpec(**self.mqar)
        if not self.objective:
            self.objective = {"lm": {"bpb": 1.0}, "mqar": {"mqar_error": 1.0},
                              "mixed": {"bpb": 1.0, "mqar_error": 1.0}}.get(self.kind, {})
        self.objective = {str(k): float(v) for k, v in self.objective.items()}
        self.validate()

    @property
    def uses_lm(self) -> bool:
        return self.kind in ("lm", "mixed")

    @property
    def uses_mqar(self) -> bool:
        return self.kind in ("mqar", "mixed")

    def validate(self) -> None:
        """Raise ValueError naming the key, the value and what is valid."""
        if self.kind not in TASK_KINDS:
            raise ValueError(f"task.kind={self.kind!r} is unknown: expected one of {', '.join(TASK_KINDS)}")
        self.mqar.validate()
        if not (0.0 < self.mqar_fraction < 1.0):
            raise ValueError(f"task.mqar_fraction={self.mqar_fraction!r} is invalid: expected a number in (0, 1)")
        for term, weight in self.objective.items():
            if term not in OBJECTIVE_TERMS:
                raise ValueError(f"task.objective.{term} is unknown: expected terms among {', '.join(OBJECTIVE_TERMS)}")
            if (term in ("bpb", "bpb_late", "byte_error") and not self.uses_lm
                    or term == "mqar_error" and not self.uses_mqar):
                raise ValueError(f"task.objective.{term} needs data that task.kind={self.kind!r} does not train on")
            if not (math.isfinite(weight) and weight >= 0):
                raise ValueError(f"task.objective.{term}={weight!r} is invalid: expected a finite weight >= 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TaskSpec":
        """Build from a plain dict; unknown keys raise ValueError naming them."""
        mqar = data.get("mqar") or {}
        bad = sorted(set(mqar) - set(MQARSpec.__dataclass_fields__)) if isinstance(mqar, dict) else []
        if bad:
            raise ValueError(f"task.mqar.{bad[0]} is not a known key: valid keys are "
                             f"{', '.join(MQARSpec.__dataclass_fields__)}")
        return strict_from_dict(cls, data, "task.")


def load_task(name: str) -> TaskSpec:
    """A task from conf/task/<name>.yaml."""
    _, data = read_profile("task", name)
    data.setdefault("name", name)
    return TaskSpec.from_dict(data)


@dataclass
class Batch:
    """Inputs and labels (B, S); rows [:n_lm] are LM windows, the rest MQAR sequences (dist: query distances)."""

    x: torch.Tensor
    y: torch.Tensor
    n_lm: int
    dist: torch.Tensor | None = None  # (B - n_lm, S): key-to-query distance at MQAR label positions, else 0


class TaskData:
    """Batches of a task at a sequence length: random training batches and a fixed validation set; with a
    `tokenizer` (a tokenizer.json) the corpus is its token ids instead of bytes."""

    def __init__(self, task: TaskSpec, seq_len: int, cache_dir: str | Path | None = None,
                 tokenizer: str | Path | None = None) -> None:
        self.task, self.seq_len = task, seq_len
        self.corpus = load_corpus(task.corpus, val_pct=task.val_pct, cache_dir=cache_dir) if task.uses_lm else None
        if self.corpus is not None and tokenizer is not None:
            self.corpus = tokenize_corpus(self.corpus, tokenizer, cache_dir)
        if self.corpus is not None:
            for split in ("train", "val"):
                self._check_windows(split, 1)
        if task.uses_mqar and seq_len < task.mqar.min_seq_len():
            raise ValueError(f"task.mqar (num_pairs={task.mqar.num_pairs}, max_distance={task.mqar.max_distance}) "
                             f"needs seq_len >= {task.mqar.min_seq_len()}; the proxy has seq_len={seq_len}")

    def _rows(self, batch_size: int) -> int:
        """LM rows of a batch."""
        if self.task.kind == "lm":
            return batch_size
        if self.task.kind == "mqar":
            return 0
        return min(batch_size - 1, max(1, round(batch_size * (1.0 - self.task.mqar_fraction))))

    def batch(self, batch_size: int, gen: torch.Generator, split: str = "train") -> Batch:
        """One batch drawn with `gen` from the train or val split."""
        n_lm = self._rows(batch_size)
        xs, ys, dist = [], [], None
        if n_lm:
            x, y = lm_batch(getattr(self.corpus, split), n_lm, self.seq_len, gen)
            xs.append(x)
            ys.append(y)
        if batch_size - n_lm:
            x, y, dist = mqar_batch(self.task.mqar, batch_size - n_lm, self.seq_len, gen)
            xs.append(x)
            ys.append(y)
        return Batch(torch.cat(xs), torch.cat(ys), n_lm, dist)

    def _check_windows(self, split: str, windows: int) -> None:
        """Raise ValueError unless the split offers `windows` distinct windows of seq_len+1 bytes."""
        assert self.corpus is not None, "checked only for a task with an lm corpus"
        n = len(getattr(self.corpus, split))
        if n - self.seq_len < windows:
            what = f"{windows} distinct validation windows" if windows > 1 else "one window"
            fix = "a longer corpus" + (" or a larger task.val_pct" if split == "val" else "")
            raise ValueError(f"task.corpus={self.corpus.source!r}: its {split} split has {n} bytes, fewer than "
                             f"seq_len+{windows}={self.seq_len + windows} for {what} of {self.seq_len + 1} bytes: "
                             f"use {fix}")

    def check_eval(self, n_batches: int, batch_size: int) -> None:
        """Raise ValueError unless the val split offers a distinct window for every LM row of the validation set."""
        if self.corpus is not None:
            self._check_windows("val", n_batches * self._rows(batch_size))

    def val_set(self, n_batches: int, batch_size: int) -> list[Batch]:
        """The fixed validation set: the same batches for every seed and trial."""
        self.check_eval(n_batches, batch_size)
        gen = torch.Generator().manual_seed(VAL_SEED)
        return [self.batch(batch_size, gen, "val") for _ in range(n_batches)]


def check_task_data(task: TaskSpec, seq_len: int, eval_batches: int, batch_size: int) -> None:
    """What a trainer checks when it starts (corpus readable, text, long enough for seq_len and its validation
    set), checked ahead: raises the same one-line ValueError."""
    TaskData(task, seq_len).check_eval(eval_batches, batch_size)
