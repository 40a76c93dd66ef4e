"""Robustness attacks (llm_forget/evaluation/robustness.py): formulas by hand, and on tiny models an
unlearned model that only suppresses its forget answers (gradient ascent) recovers under relearning while
the retain model (never trained on the forget people) stays at its baseline."""

import math

import pytest
import torch

from llm_forget.evaluation.robustness import (attack, few_shot_template, is_attack_suite, load_attack_suite,
                                              quantize_model, quantize_rtn, recovery)


def test_recovery_by_hand():
    assert recovery(0.2, 0.5, 0.8) == pytest.approx(0.5)  # probability: half the gap closed
    assert recovery(3.0, 2.0, 1.0) == pytest.approx(0.5)  # NLL: the same formula, both signs flip
    assert recovery(0.2, 0.2, 0.8) == 0.0
    assert recovery(0.2, 0.1, 0.8) == pytest.approx(-1 / 6)
    assert math.isnan(recovery(0.5, 0.7, 0.5))


def test_quantize_rtn_by_hand():
    w = torch.tensor([[1.0, -0.6, 0.25], [0.0, 0.0, 0.0], [2.0, 0.3, -1.1]])
    # 4 bits: q_max = 7. Row 0: s = 1/7, w/s = [7, -4.2, 1.75] -> [7, -4, 2].
    # Row 2: s = 2/7, w/s = [7, 1.05, -3.85] -> [7, 1, -4]. The zero row stays zero.
    want = torch.tensor([[1.0, -4 / 7, 2 / 7], [0.0, 0.0, 0.0], [2.0, 2 / 7, -8 / 7]])
    assert torch.allclose(quantize_rtn(w, 4), want, atol=1e-6)
    # 8 bits: q_max = 127, error at most s/2 per row and every value on the grid
    q8 = quantize_rtn(w, 8)
    s = w.abs().amax(1, keepdim=True) / 127
    assert ((q8 - w).abs() <= s / 2 + 1e-7).all()
    assert torch.allclose(q8[0] / (1 / 127), torch.round(q8[0] / (1 / 127)), atol=1e-4)
    assert quantize_rtn(w.half(), 4).dtype == torch.float16
    with pytest.raises(ValueError):
        quantize_rtn(w, 1)


def test_quantize_model_copies():
    m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    before = [p.detach().clone() for p in m.parameters()]
    q = quantize_model(m, 4)
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters()))  # input untouched
    assert torch.allclose(q[0].weight, quantize_rtn(m[0].weight, 4))
    assert torch.equal(q[0].bias, m[0].bias)  # biases stay in full precision


def test_few_shot_template_escapes():
    t = few_shot_template("Q: {question}\nA:", [{"question": "What is {x}?", "answer": " y "}])
    assert t == "Q: What is {{x}}?\nA: y\n\nQ: {question}\nA:"
    assert t.format(question="Z") == "Q: What is {x}?\nA: y\n\nQ: Z\nA:"


def test_suite_loading():
    cfg = load_attack_suite("robustness")
    assert set(cfg["attacks"]) == {"relearn", "relearn_retain", "quantize", "prompts", "in_context"}
    assert cfg["attacks"]["relearn"]["steps"] == [10, 25, 50] and cfg["attacks"]["relearn"]["fraction"] == 0.1
    assert is_attack_suite("robustness") and not is_attack_suite("quick")
    from llm_forget.errors import UserError

    with pytest.raises(UserError):
        load_attack_suite({"datasets": {"forget": "builtin:forget"}, "attacks": {"bogus": {}}})


@pytest.fixture(scope="module")
def ga_model(tmp_path_factory, target_path):
    """Gradient ascent pushed hard (no early stopping): the forget answers are suppressed."""
    from llm_forget.api import unlearn

    out = tmp_path_factory.mktemp("ga")
    unlearn("llm_forget/recipes/gradient_ascent.yaml", model=target_path, output_dir=str(out), eval_suite="none",
            learning_rate=2e-4, num_train_epochs=3, retain_budget=None, overwrite=True)
    return str(out / "model")


def test_relearning_recovers_suppressed_not_retain(ga_model, target_path, retain_path):
    from llm_forget.models import model_hash

    h = model_hash(ga_model)
    suite = {"name": "t", "datasets": {"forget": "builtin:forget", "retain": "builtin:retain"},
             "attacks": {"relearn": {"steps": [25]}}}
    r = attack(ga_model, target_path, suite, retain_model=retain_path)
    d = r["attacks"]["relearn"]["steps_25"]
    assert r["attacks"]["relearn"]["n_train_rows"] == 5 and r["attacks"]["relearn"]["n_eval_rows"] == 45
    # References: the target (what was known) and the retain model (never saw the forget people, so 5
    # of them teach it nothing about the other 45: its recovery is ~0). Measured, LLM_FORGET_SEED 0 / 1 / 2:
    # probability before 0.033 / 0.010 / 0.038 (target 0.91); recovery 0.27 / 0.22 / 0.19 against the
    # retain model's -0.02 / -0.01 / 0.01; NLL recovery 0.58 / 0.56 / 0.52 against 0.08 / 0.10 / 0.16
    # (shared answer formats relearned).
    assert d["model"]["before"] < 0.5 * d["model"]["target"]  # gradient ascent suppressed the answers
    assert abs(d["retain"]["recovery"]) < 0.1
    assert d["model"]["recovery"] > d["retain"]["recovery"] + 0.1
    assert d["model"]["nll_recovery"] > d["retain"]["nll_recovery"] + 0.2
    assert model_hash(ga_model) == h  # the model folder is never modified
    assert r["summary"]["relearn_steps_25_recovery"] == d["model"]["recovery"]


def test_suite_runs_via_api_and_cli(ga_model, target_path, retain_path, tmp_path, capsys):
    import json

    from llm_forget.cli import main

    r = attack(ga_model, target_path, "robustness", retain_model=retain_path,
               only=["quantize", "prompts", "in_context"])
    q8 = r["attacks"]["quantize"]["8bit"]["model"]
    assert abs(q8["after"] - q8["before"]) < 0.01  # 8-bit round trip barely moves a tiny fp32 model
    assert set(r["attacks"]["prompts"]) >= {"template_0", "template_1"}  # no paraphrased questions here
    assert set(r["attacks"]["in_context"]) >= {"shots_1", "shots_3"}
    for k, v in r["summary"].items():
        assert isinstance(v, float), k
    suite = tmp_path / "q.yaml"
    suite.write_text("name: q\ndatasets: {forget: builtin:forget}\nattacks: {quantize: {bits: [4]}}\n")
    rc = main(["eval", "--suite", str(suite), "--model", ga_model, "--target-model", target_path,
               "--output", str(tmp_path / "out")])
    assert rc == 0
    res = json.loads((tmp_path / "out" / "robustness.json").read_text())
    assert "quantize_4bit_recovery" in res["summary"]
    assert "Plum" not in (tmp_path / "out" / "robustness.json").read_text()  # no forget text in results
    assert "quantize" in capsys.readouterr().out
    assert main(["eval", "--suite", str(suite), "--model", ga_model]) == 2  # needs --target-model


def test_paraphrased_questions_on_tofu_rows(ga_model, target_path, tmp_path):
    """Rows in TOFU's format carry paraphrased_question: the prompts attack asks it (suite variables
    pick the data). The rows are the built-in benchmark's, written in that format here."""
    import json

    from llm_forget.data.readers import read_rows

    forget = [{"question": r["question"], "answer": r["answer"], "paraphrased_question": f"Tell me: {r['question']}"}
              for r in read_rows("builtin:forget")[:4]]
    retain = [{"question": r["question"], "answer": r["answer"]} for r in read_rows("builtin:retain")[:8]]
    (tmp_path / "forget01.json").write_text(json.dumps(forget))
    (tmp_path / "retain90.json").write_text(json.dumps(retain))
    r = attack(ga_model, target_path, "robustness", only=["prompts"], limit=4,
               variables={"forget_data": str(tmp_path / "forget01.json"),
                          "retain_data": str(tmp_path / "retain90.json")})
    d = r["attacks"]["prompts"]["paraphrased_question"]["model"]
    assert d["before"] != d["after"] and 0 < d["after"] < 1
    assert len(r["forget_ids"]) == 4
