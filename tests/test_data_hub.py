"""Hub dataset specs (hf:NAME[:CONFIG][@SPLIT]) and the local mirror (LLM_FORGET_DATA_DIR)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llm_forget.data import hub
from llm_forget.data.readers import read_rows
from llm_forget.editing.requests import read_requests
from llm_forget.errors import UserError

PACKAGE = Path(__file__).resolve().parents[1] / "llm_forget"
ROWS = [{"question": f"Who wrote book {i}?", "answer": f"Author {i}.", "paraphrased_answer": f"A{i}.",
         "perturbed_answer": [f"B{i}.", f"C{i}."]} for i in range(7)]


def test_known_id_is_read_from_the_mirror(tmp_path, monkeypatch):
    (tmp_path / "tofu").mkdir()
    (tmp_path / "tofu" / "forget01.json").write_text(json.dumps(ROWS))
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "wikitext2_valid.txt").write_text(" = Heading = \n\n Some text .\n")
    monkeypatch.setenv(hub.ENV, str(tmp_path))
    assert read_rows("hf:locuslab/TOFU:forget01_perturbed") == ROWS
    assert read_rows("hf:Salesforce/wikitext:wikitext-2-v1@validation") == [{"text": " = Heading = "},
                                                                            {"text": " Some text ."}]


def test_any_id_in_the_generic_layout(tmp_path, monkeypatch):
    d = tmp_path / "someone" / "facts" / "default"
    d.mkdir(parents=True)
    (d / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS[:3]))
    monkeypatch.setenv(hub.ENV, str(tmp_path))
    assert read_rows("hf:someone/facts@test") == ROWS[:3]
    # ROME's CounterFact layout on the Hub, read as edit requests through the same mirror
    cf = tmp_path / "someone" / "cf" / "default"
    cf.mkdir(parents=True)
    (cf / "train.json").write_text(json.dumps([{
        "case_id": 0, "requested_rewrite": {"prompt": "{} plays", "subject": "Ann Lee", "target_new": {"str": "jazz"},
                                            "target_true": {"str": "rock"}},
        "paraphrase_prompts": ["Ann Lee is known for"], "neighborhood_prompts": ["Bo Kim plays"]}]))
    (r,) = read_requests("hf:someone/cf")
    assert (r.prompt, r.target_new, r.target_true) == ("Ann Lee plays", "jazz", "rock")


def test_missing_offline_is_one_line_naming_the_mirror(tmp_path, monkeypatch):
    monkeypatch.setenv(hub.ENV, str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError) as e:
        read_rows("hf:locuslab/TOFU:forget05_perturbed")
    msg = str(e.value)
    assert "\n" not in msg and "hf:locuslab/TOFU:forget05_perturbed@train" in msg and hub.ENV in msg


def test_edit_stops_on_missing_corpus_before_any_work(tmp_path):
    """`llm-forget edit memit` offline with an empty mirror: exit 2, one line, nothing written,
    before any model is loaded (the recipe's model is not even resolved)."""
    env = {**os.environ, hub.ENV: str(tmp_path / "mirror"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    cf = tmp_path / "cf.json"
    cf.write_text(json.dumps([{"prompt": "Ann Lee plays", "subject": "Ann Lee", "target_new": "jazz"}]))
    out = tmp_path / "run"
    p = subprocess.run([sys.executable, "-m", "llm_forget", "edit", "memit", "--requests", str(cf),
                        "--model", "no-such-model", "--output_dir", str(out)], env=env, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 2, p.stderr
    err = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(err) == 1 and "hf:Salesforce/wikitext:wikitext-2-v1@validation" in err[0] and hub.ENV in err[0]
    assert not out.exists()


def test_shipped_files_name_no_path_outside_the_package():
    offenders = [f"{p.relative_to(PACKAGE)}:{i}" for p in PACKAGE.rglob("*") if p.suffix in (".py", ".yaml", ".md")
                 for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
                 if "../shared" in line or "shared/data" in line]
    assert offenders == []


def test_unlearn_stops_on_missing_dataset_before_the_model(tmp_path, monkeypatch):
    import llm_forget

    monkeypatch.setenv(hub.ENV, str(tmp_path / "mirror"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match=r"hf:someone/facts@train cannot be loaded.*LLM_FORGET_DATA_DIR"):
        llm_forget.unlearn(str(PACKAGE / "recipes" / "grad_diff.yaml"), model="no-such-model",
                           forget="hf:someone/facts", output_dir=str(tmp_path / "o"))
    assert not (tmp_path / "o").exists()
