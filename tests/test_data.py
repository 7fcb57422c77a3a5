"""nas.evaluation.data: MQAR layout, corpus split and content-keyed cache, bad inputs."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch

from nas.evaluation.data import (
    IGNORE,
    MQARSpec,
    TaskData,
    TaskSpec,
    check_task_data,
    load_corpus,
    load_task,
    mqar_batch,
    stdlib_root,
)


def test_mqar_pairs_sit_anywhere_and_queries_span_the_distance_range() -> None:
    spec = MQARSpec(vocab=32, num_pairs=5, min_distance=4)
    S = 256
    x, y, dist = mqar_batch(spec, 64, S, torch.Generator().manual_seed(3))
    assert x.shape == y.shape == dist.shape == (64, S)
    n, half = spec.num_pairs, spec.vocab // 2
    seen_distances, key_positions = [], []
    for row_x, row_y, row_d in zip(x.tolist(), y.tolist(), dist.tolist()):
        queries = [i for i, label in enumerate(row_y) if label != IGNORE]
        assert len(queries) == n
        for q in queries:
            key, d = row_x[q], row_d[q]
            assert 1 <= key < half and half <= row_y[q] < spec.vocab
            assert row_x[q - d] == key and row_x[q - d + 1] == row_y[q] == row_x[q + 1]  # the pair, d back
            assert [i for i in range(q) if row_x[i] == key] == [q - d]  # the key's only earlier occurrence
            seen_distances.append(d)
            key_positions.append(q - d)
        assert len({row_x[q] for q in queries}) == n and len({row_y[q] for q in queries}) == n
        filled = {p for q in queries for p in (q - row_d[q], q - row_d[q] + 1, q, q + 1)}
        assert all(row_x[i] == 0 for i in range(S) if i not in filled)
    assert min(seen_distances) >= spec.min_distance and max(seen_distances) <= S - 2
    # log-uniform distances: about as many in [4, 16) as in [64, 256) (each 2 of the 6 doublings)
    short = sum(d < 16 for d in seen_distances)
    long = sum(d >= 64 for d in seen_distances)
    assert 0.5 < short / long < 2.0
    # pairs are not confined to a prefix that global tokens would cover
    assert sum(p >= 16 for p in key_positions) > 0.8 * len(key_positions)


def test_mqar_rejects_a_sequence_too_short_for_its_distance() -> None:
    spec = MQARSpec(vocab=32, num_pairs=4, min_distance=8, max_distance=64)
    with pytest.raises(ValueError, match="seq_len >= 82"):
        mqar_batch(spec, 2, 77, torch.Generator())
    with pytest.raises(ValueError, match="num_pairs"):
        MQARSpec(vocab=8, num_pairs=4).validate()
    with pytest.raises(ValueError, match="max_distance"):
        MQARSpec(min_distance=8, max_distance=4).validate()


def _make_folder(root, n_files: int = 40) -> list[bytes]:
    contents = []
    for i in range(n_files):
        text = f"# file {i}\n" + f"value_{i} = {i * 7919}\n" * (i % 5 + 1)
        sub = root / f"pkg{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"mod{i}.py").write_text(text)
        contents.append(text.encode())
    return contents


def test_folder_corpus_splits_by_file_deterministically(tmp_path) -> None:
    contents = _make_folder(tmp_path / "src")
    a = load_corpus(tmp_path / "src", val_pct=25, cache_dir=tmp_path / "c1")
    b = load_corpus(tmp_path / "src", val_pct=25, cache_dir=tmp_path / "c2")
    assert np.array_equal(a.train, b.train) and np.array_equal(a.val, b.val)
    train, val = bytes(a.train), bytes(a.val)
    assert len(train) + len(val) == sum(map(len, contents))
    assert val and train
    for text in contents:  # each file lies wholly in exactly one split
        assert (text in train) != (text in val)


def test_cache_is_keyed_by_content_not_path(tmp_path) -> None:
    cache = tmp_path / "cache"
    (tmp_path / "a.txt").write_text("hello corpus\n" * 200)
    shutil.copy(tmp_path / "a.txt", tmp_path / "b.txt")
    a = load_corpus(tmp_path / "a.txt", cache_dir=cache)
    b = load_corpus(tmp_path / "b.txt", cache_dir=cache)
    assert a.key == b.key
    assert len(list((cache / "corpus").glob("*.train.u8"))) == 1
    assert isinstance(a.train, np.memmap)
    (tmp_path / "a.txt").write_text("changed corpus\n" * 200)
    c = load_corpus(tmp_path / "a.txt", cache_dir=cache)
    assert c.key != a.key
    assert bytes(c.train) + bytes(c.val) == b"changed corpus\n" * 200
    assert len(list((cache / "corpus").glob("*.train.u8"))) == 2


def test_default_corpus_is_the_stdlib_source_without_site_packages(tmp_path) -> None:
    corpus = load_corpus(cache_dir=tmp_path)
    root = stdlib_root()
    sizes = 0
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in ("site-packages", "dist-packages", "__pycache__")
                   and not d.startswith(".")]
        sizes += sum(os.path.getsize(os.path.join(folder, f)) for f in files
                     if f.endswith(".py") and not f.startswith("."))
    assert len(corpus.train) + len(corpus.val) == sizes
    assert 0.03 < len(corpus.val) / sizes < 0.2  # val_pct=10 of the files


@pytest.mark.parametrize("kind", ["missing", "empty", "empty_dir", "binary"])
def test_bad_corpus_gives_one_line_naming_the_path(tmp_path, kind: str) -> None:
    path = tmp_path / f"corpus_{kind}"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "empty_dir":
        path.mkdir()
    elif kind == "binary":
        path.write_bytes(bytes(range(256)) * 10)
    with pytest.raises(ValueError) as err:
        load_corpus(path, cache_dir=tmp_path / "cache")
    message = str(err.value)
    assert str(path) in message and "\n" not in message


def test_corpus_shorter_than_a_sequence_is_rejected(tmp_path) -> None:
    (tmp_path / "short.txt").write_text("x = 1\n" * 10)
    task = TaskSpec(corpus=str(tmp_path / "short.txt"))
    with pytest.raises(ValueError, match="fewer than seq_len"):
        TaskData(task, 128, cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("kind", ["missing", "empty", "binary", "binary_only_dir"])
def test_check_task_data_finds_what_a_trainer_would_fail_on(tmp_path, monkeypatch, kind: str) -> None:
    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "corpus"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "binary":
        path.write_bytes(bytes(range(256)) * 10)
    elif kind == "binary_only_dir":
        path.mkdir()
        (path / "a.bin").write_bytes(b"\0" * 1000)
    with pytest.raises(ValueError) as err:
        check_task_data(TaskSpec(corpus=str(path)), 64, 8, 16)
    assert str(err.value).startswith(f"task.corpus={str(path)!r}") and "\n" not in str(err.value)
    assert check_task_data(TaskSpec(kind="mqar"), 64, 8, 16) is None  # MQAR reads no corpus


def test_each_split_must_hold_the_windows_it_is_drawn_from(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "c.txt"
    path.write_bytes(b"x = f(yz)\n" * 100)  # 1000 bytes: one file splits by its tail, 10% = 100 bytes
    lm, mixed = TaskSpec(corpus=str(path)), TaskSpec(kind="mixed", corpus=str(path), mqar_fraction=0.5)
    check_task_data(lm, 64, 2, 18)  # 36 validation windows of 65 bytes: 100 - 64 = 36 distinct starts
    with pytest.raises(ValueError, match=r"its val split has 100 bytes, fewer than seq_len\+38=102 for 38 distinct "
                                         r"validation windows of 65 bytes: "
                                         r"use a longer corpus or a larger task.val_pct"):
        check_task_data(lm, 64, 2, 19)
    check_task_data(mixed, 64, 2, 36)  # half of each batch is LM rows: 36 windows
    with pytest.raises(ValueError, match="for 38 distinct validation windows"):
        check_task_data(mixed, 64, 2, 38)
    with pytest.raises(ValueError, match=r"its train split has 900 bytes, fewer than seq_len\+1=901 for one window "
                                         r"of 901 bytes: use a longer corpus$"):
        check_task_data(lm, 900, 1, 1)
    with pytest.raises(ValueError, match="for 38 distinct validation windows"):  # the trainer's own check
        TaskData(lm, 64).val_set(2, 19)


def test_unknown_tasks_and_objectives_are_rejected() -> None:
    with pytest.raises(ValueError, match="task='nope' is unknown: expected one of .*lm"):
        load_task("nope")
    with pytest.raises(ValueError, match="task.kind='vision'"):
        TaskSpec(kind="vision")
    with pytest.raises(ValueError, match="task.objective.mqar_error"):
        TaskSpec(kind="lm", objective={"mqar_error": 1.0})
    with pytest.raises(ValueError, match="task.objective.perplexity"):
        TaskSpec(kind="lm", objective={"perplexity": 1.0})


def test_mixed_batches_hold_lm_rows_then_mqar_rows(tmp_path) -> None:
    (tmp_path / "c.txt").write_text("def f(x):\n    return x + 1\n" * 300)
    task = TaskSpec(kind="mixed", corpus=str(tmp_path / "c.txt"), mqar={"vocab": 16, "num_pairs": 2, "min_distance": 8})
    data = TaskData(task, 32, cache_dir=tmp_path / "cache")
    batch = data.batch(8, torch.Generator().manual_seed(0))
    assert batch.n_lm == 4
    assert (batch.y[:4] != IGNORE).all()  # LM rows: a target at every position
    assert torch.equal(batch.x[:4, 1:], batch.y[:4, :-1])
    assert ((batch.y[4:] != IGNORE).sum(dim=1) == 2).all()  # MQAR rows: one label per query
    first, again = data.val_set(2, 8), data.val_set(2, 8)
    assert all(torch.equal(p.x, q.x) and torch.equal(p.y, q.y) for p, q in zip(first, again))
