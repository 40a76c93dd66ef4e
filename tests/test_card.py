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
                          max_steps=2, per_device_train_batch_size=5, learning_rate=1e-3, logging_steps=1,
                          retain_budget=None)  # mechanics: both steps applied, every row evaluated
    finally:
        root.removeHandler(handler)
        root.setLevel(old)
    return res.output_dir, buf.getvalue() + out.getvalue() + err.getvalue(), forget


def _eval_results(run):
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard_data import model_index_to_eval_results

    card = ModelCard.load(run / "README.md", ignore_metadata_errors=False)
    _, evals = model_index_to_eval_results(card.data.to_dict()["model-index"])
    return card, evals


def assert_no_local_path(text, *roots):
    """Neither the run's folders, the cache, the home folder, nor any absolute path appear."""
    import re
    from pathlib import Path

    from llm_forget.zoo import cache_dir

    for root in (*roots, cache_dir(), Path.home()):
        assert str(root) not in text, root
    assert re.search(r"(?<![\w.:/])/(?:tmp|root|home|work|var|usr|Users|private)/", text) is None


def assert_valid_card(run, results=None):
    """The card parses with huggingface_hub, and its model-index gives back exactly one eval result
    per (dataset, metric): every number of results.json's summary, each under its own dataset."""
    from llm_forget.reporting.datasets import role_of

    results = results or json.loads((run / "results.json").read_text())
    card, evals = _eval_results(run)
    ids = [(e.dataset_type, e.dataset_name, e.dataset_split, e.dataset_config, e.metric_type) for e in evals]
    assert len(ids) == len(set(ids)) == len(card_metrics(results["summary"]))
    assert {e.metric_type: e.metric_value for e in evals} == card_metrics(results["summary"])
    datasets = {}
    for e in evals:  # one dataset per evaluated set, and no two sets share one
        datasets.setdefault(role_of(e.metric_type), set()).add((e.dataset_type, e.dataset_split, e.dataset_config))
    assert all(len(v) == 1 for v in datasets.values()) and len(set.union(*datasets.values())) == len(datasets)
    return card, evals


def test_card_model_index_round_trips_every_number(canary_run):
    run, _, _ = canary_run
    results = json.loads((run / "results.json").read_text())
    card, evals = assert_valid_card(run, results)
    got = {e.metric_type: e for e in evals}
    for k in ("mia_auc", "forget_perplexity", "retain_perplexity", "forget_probability"):
        assert got[k].metric_value == results["summary"][k]
    assert "forget_n" not in got and "eval_seconds" not in got
    # each metric under the dataset of the set it measures: the files' own names and formats
    assert (got["forget_perplexity"].dataset_type, got["forget_perplexity"].dataset_name) == ("json", "f.json")
    assert (got["retain_perplexity"].dataset_type, got["retain_perplexity"].dataset_name) == ("json", "r.json")
    assert (got["holdout_perplexity"].dataset_name, got["holdout_perplexity"].dataset_split) == ("h.json", "holdout")
    assert got["mia_auc"].dataset_name == "f.json" and got["model_utility"].dataset_name == "r.json"
    assert all(e.task_type == "text-generation" for e in evals)
    assert card.data.base_model == "tiny-target" and card.data.library_name == "transformers"
    text = (run / "README.md").read_text()
    assert_no_local_path(text, run.parent)
    head = json.loads((run / "ledger.jsonl").read_text().splitlines()[-1])
    assert head["hash"] in text and head["signer"] in text  # the anchor: head hash and public key
    assert "Zhang et al., Negative Preference Optimization" in text  # the method's citation
    assert "| 0 | `req-" in text and "| items | 5 |" in text  # what was forgotten: counts and set digest
    assert "nobody else can confirm or rule out a guessed row" in text


def test_adapter_run_card_names_peft_and_the_original_base(canary_run):
    """A LoRA run on top of the canary run's model: `peft`, and the base is the zoo model that run
    started from, not the local folder."""
    from llm_forget import unlearn

    run, _, _ = canary_run
    d = run.parent
    res = unlearn("llm_forget/recipes/grad_diff.yaml", model=str(run / "model"), forget=str(d / "f.json"),
                  retain=str(d / "r.json"), holdout="none", output_dir=str(d / "lora"), max_steps=1, lora_r=4,
                  eval_suite="none", per_device_train_batch_size=4, disable_tqdm=True)
    assert (res.output_dir / "model" / "adapter_config.json").is_file()
    from huggingface_hub import ModelCard

    card = ModelCard.load(res.output_dir / "README.md", ignore_metadata_errors=False)
    assert card.data.library_name == "peft" and card.data.base_model == "tiny-target"
    assert card.data.eval_results is None  # eval_suite none: no model-index, and the card says so
    assert "No evaluation was run" in card.text and "AutoPeftModelForCausalLM" in card.text
    assert_no_local_path(str(card), d)
    # an evaluation made afterwards (as the demo does for its recipe runs) reaches results.json and the card
    from llm_forget.reporting import attach_evaluation

    summary = json.loads((run / "results.json").read_text())["summary"]
    attach_evaluation(res.output_dir, summary)
    card, evals = assert_valid_card(res.output_dir)
    assert len(evals) == len(card_metrics(summary)) and card.data.library_name == "peft"


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
    # named by a keyed fingerprint instead: not even the row's plain hash is published
    assert row_hash(forget[-1]) not in (run / "ledger.jsonl").read_text()
    from llm_forget.reporting import proofs

    assert proofs.prove(run, forget[-1])["entry"] == 0
    # results.json names rows by plain hash for the operator; the copy pushed to the Hub does not
    from llm_forget.reporting.card import public_results

    published = json.dumps(public_results(run))
    assert row_hash(forget[-1]) in (run / "results.json").read_text()
    assert not any(row_hash(r) in published for r in forget) and CANARY not in published
    assert len(json.loads(published)["per_item"]["forget"]) == 5
    assert_no_local_path(published, run.parent)


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
