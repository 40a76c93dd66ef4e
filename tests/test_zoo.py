"""The model zoo's cache and the quiet fine-tuning it builds with."""

from __future__ import annotations

import pytest

from llm_forget import zoo
from llm_forget.errors import UserError


def test_is_cached_follows_the_build_and_the_seed(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_FORGET_CACHE", str(tmp_path))
    assert not zoo.is_cached("tiny")
    path = zoo.get("tiny")
    assert zoo.is_cached("tiny") and path.parent == tmp_path / "zoo" and (path / "tokenizer.json").exists()
    monkeypatch.setenv("LLM_FORGET_SEED", "5")  # another draw is another folder, not built yet
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
