"""Hub model cards: model-index round trip against results.json, and no forget-set text anywhere."""

import contextlib
import io
import json
import logging
import uuid

import pytest

from llm_forget.cli import main
from llm_forget.reporting.card import build_card, card_metrics


CANARY = f"zqx-canary-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def canary_run(tmp_path_factory, target_path):
    """An unlearning run whose forget set holds a unique canary string; every log record and
    everything printed during the run is captured."""
    from llm_forget import unlearn
    from llm_forget.data import benchmark

    d = tmp_path_factory.mktemp("card")
    forget = benchmark.split("forget")[:4] + [{"question": f"What is the secret of {CANARY}?",
                                               "answer": f"The secret is {CANARY}."}]
    (d / "f.json").write_text(json.dumps(forget))
    (d / "r.json").write_text(json.dumps(benchmark.split("retain")[:6]))
    (d / "h.json").write_text(json.dumps(benchmark.split("holdout")[:5]))
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            res = unlearn("llm_forget/recipes/npo.yaml", model=target_path, forget=str(d / "f.json"),
                          retain=str(d / "r.json"), holdout=str(d / "h.json"), output_dir=str(d / "run"),
                          max_steps=2, per_device_train_batch_size=5, learning_rate=1e-3, logging_steps=1)
    finally:
        root.removeHandler(handler)
        root.setLevel(old)
    return res.output_dir, buf.getvalue() + out.getvalue() + err.getvalue(), forget


def test_card_model_index_round_trips_every_number(canary_run):
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard_data import model_index_to_eval_results

    run, _, _ = canary_run
    results = json.loads((run / "results.json").read_text())
    card = ModelCard.load(run / "README.md")
    name, evals = model_index_to_eval_results(card.data.to_dict()["model-index"])
    got = {e.metric_type: e.metric_value for e in evals}
    want = card_metrics(results["summary"])
    assert got == want  # exact: every number of the summary, nothing else
    for k in ("mia_auc", "forget_perplexity", "retain_perplexity", "forget_probability"):
        assert got[k] == results["summary"][k]
    assert "forget_n" not in got and "eval_seconds" not in got
    assert all(e.task_type == "text-generation" and e.dataset_type == "local" for e in evals)
    text = (run / "README.md").read_text()
    head = (run / "ledger.jsonl").read_text().splitlines()[-1]
    assert json.loads(head)["hash"] in text
    assert "Zhang et al., Negative Preference Optimization" in text  # the method's citation
    assert "| 0 | `req-" in text and "| items | 5 |" in text  # what was forgotten: counts and hashes


def test_canary_appears_nowhere(canary_run):
    from llm_forget.data.readers import row_hash

    run, logs, forget = canary_run
    files = [p for p in run.rglob("*") if p.is_file()]
    names = {p.relative_to(run).as_posix() for p in files}
    assert {"README.md", "ledger.jsonl", "results.json", "recipe.yaml", "model/model.safetensors"} <= names
    for p in files:
        assert CANARY.encode() not in p.read_bytes(), p
    assert "step 2" in logs or "loss" in logs  # the capture did see the run's logs
    assert CANARY not in logs
    ledger = json.loads((run / "ledger.jsonl").read_text().splitlines()[-1])
    assert row_hash(forget[-1]) in ledger["forgotten"]["row_sha256"]  # named by hash instead


def test_card_command_regenerates_the_same_card(canary_run, capsys):
    run, _, _ = canary_run
    before = (run / "README.md").read_text()
    (run / "README.md").unlink()
    assert main(["card", str(run)]) == 0
    assert (run / "README.md").read_text() == before == str(build_card(run))


def test_push_offline_is_a_clear_error(canary_run, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["card", str(canary_run[0]), "--push-to-hub", "someone/model"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["error: cannot push to the Hub: offline mode (HF_HUB_OFFLINE=1); "
                                        "unset it and log in first"]


def test_card_of_a_folder_without_results_is_a_user_error(tmp_path):
    assert main(["card", str(tmp_path)]) == 2
