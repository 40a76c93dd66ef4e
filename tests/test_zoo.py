"""The model zoo's cache and the quiet fine-tuning it builds with."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from llm_forget import zoo
from llm_forget.errors import UserError


def test_is_cached_follows_the_build_and_the_seed(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_FORGET_CACHE", str(tmp_path))
    assert not zoo.is_cached("tiny")
    path = zoo.get("tiny")
    assert zoo.is_cached("tiny") and path.parent == tmp_path / "zoo" and (path / "tokenizer.json").exists()
    # another draw is another folder, not built yet (another seed than the one this suite runs under)
    monkeypatch.setenv("LLM_FORGET_SEED", str(zoo.seed() + 1))
    assert not zoo.is_cached("tiny") and not zoo.is_cached("tiny-target")
    with pytest.raises(UserError, match="unknown zoo model 'tiny-x'"):
        zoo.is_cached("tiny-x")


def test_quiet_fine_tuning_prints_no_loss_dicts(tiny_path, tmp_path, capsys):
    from llm_forget.data.readers import read_rows
    from llm_forget.sft import train

    res = train(tiny_path, read_rows("builtin:retain")[:8], tmp_path / "ft", progress=False, max_steps=2,
                batch_size=4)
    assert res["steps"] == 2 and (tmp_path / "ft" / "config.json").exists()
    out = capsys.readouterr().out
    assert "train_runtime" not in out and "'loss'" not in out, out


def _slow_build(tmp, log: str) -> None:
    """A build that takes a while and leaves a trace of who ran it (one line per build)."""
    with open(log, "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(1.0)
    (Path(tmp) / "config.json").write_text("{}")


def _get_in_process(dest: str, log: str) -> str:
    return str(zoo._atomic_build(Path(dest), lambda d: _slow_build(d, log)))


def test_two_processes_asking_for_one_model_build_it_once(tmp_path):
    """Two test workers (or two ranks) asking for the same uncached model: the second waits for the
    first's build (a lock file beside the folder) instead of building it again."""
    import multiprocessing as mp

    dest, log = tmp_path / "zoo" / "m", tmp_path / "builds.log"
    with mp.get_context("spawn").Pool(2) as pool:
        got = pool.starmap(_get_in_process, [(str(dest), str(log))] * 2)
    assert got == [str(dest)] * 2 and (dest / "config.json").exists()
    assert len(log.read_text().split()) == 1  # one build; without the lock both processes build (2 lines)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["m", "m.lock"]  # no half-built folder left
