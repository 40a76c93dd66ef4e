"""Calibration rows (what checkpoint selection looks at) are disjoint from the rows a run's evaluation
reports on; without a holdout, forget questions with swapped answers stand in for "never seen"."""

import json
import math

import pytest
import torch

import llm_forget
from llm_forget.data.readers import read_rows
from llm_forget.recipes_index import shipped
from llm_forget.selection import RetainBudgetSelector, calibration_split, split_by_group, swapped_rows


def test_holdout_splits_by_person_and_retain_calibration_is_left_out():
    holdout, retain, forget = (read_rows(f"builtin:{k}") for k in ("holdout", "retain", "forget"))
    s = calibration_split(forget, retain, holdout, select_rows=100, seed=0)
    cal, ev = s["calibration"], s["evaluation"]
    for k in ("retain", "holdout"):
        assert not set(cal[k]) & set(ev[k]) and sorted(cal[k] + ev[k]) == list(range(len(locals()[k])))
        rows = locals()[k]
        assert not {rows[i]["person"] for i in cal[k]} & {rows[i]["person"] for i in ev[k]}  # whole people
    assert len(cal["holdout"]) == 25 and len(ev["holdout"]) == 25  # 10 people of 5 facts, halved
    assert len(cal["retain"]) == 100 and len(ev["retain"]) == 300
    assert s == calibration_split(forget, retain, holdout, select_rows=100, seed=0)  # same on every rank
    other = calibration_split(forget, retain, holdout, 100, seed=1)
    assert s["calibration"]["holdout"] != other["calibration"]["holdout"]


def test_rows_without_a_group_key_split_by_row_and_avoided_groups_stay_out():
    rows = [{"question": f"q{i}", "answer": "a"} for i in range(10)]
    c, e = split_by_group(rows, 4)
    assert len(c) == 4 and len(e) == 6 and not set(c) & set(e)
    avoid = {f"q{i}" for i in range(6)}
    c, _ = split_by_group(rows, 4, avoid=avoid)
    assert {rows[i]["question"] for i in c} == {"q6", "q7", "q8", "q9"}
    one = [{"question": "q", "answer": "a", "author": "x"}] * 3
    assert split_by_group(one, 2) == ([0, 1, 2], [])  # a single group cannot be split


def test_swapped_rows_are_a_derangement_of_the_forget_answers():
    forget = read_rows("builtin:forget")
    sw = swapped_rows(forget, seed=0)
    assert [r["question"] for r in sw] == [r["question"] for r in forget]
    assert sorted(r["answer"] for r in sw) == sorted(r["answer"] for r in forget)
    assert all(a["answer"] is not b["answer"] for a, b in zip(sw, forget))
    assert sum(a["answer"] != b["answer"] for a, b in zip(sw, forget)) >= 45  # a few values repeat
    assert swapped_rows(forget[:1]) == []


def test_a_run_reports_on_rows_it_did_not_calibrate_on(target_path, tmp_path):
    res = llm_forget.unlearn(str(shipped()["grad_diff"]), model=target_path, output_dir=str(tmp_path / "gd"),
                             max_steps=6, disable_tqdm=True)
    r = json.loads((res.output_dir / "results.json").read_text())
    cal, ev = r["rows"]["calibration"], r["rows"]["evaluation"]
    holdout = read_rows("builtin:holdout")
    assert not set(cal["holdout"]) & set(ev["holdout"]) and not set(cal["retain"]) & set(ev["retain"])
    # the evaluation's membership non-members are the evaluation half only (before: all 50 holdout rows)
    assert len(r["per_item"]["holdout"]) == len(ev["holdout"]) == 25
    assert len(r["per_item"]["retain"]) == len(ev["retain"]) == 300
    assert r["selection"]["target"] == "holdout"
    assert {holdout[i]["person"] for i in cal["holdout"]}.isdisjoint({holdout[i]["person"] for i in ev["holdout"]})
    assert set(r["rows"]["digest"]) == {"forget", "retain", "holdout"}
    assert r["counts"]["retain_trained"] == 6 * 8  # 6 steps of 8 rows, every one a different retain row


def test_without_holdout_the_reference_is_swapped_forget_answers(target_path, tmp_path):
    res = llm_forget.unlearn(str(shipped()["grad_diff"]), model=target_path, output_dir=str(tmp_path / "nh"),
                             holdout="none", max_steps=4, disable_tqdm=True)
    sel = json.loads((res.output_dir / "results.json").read_text())["selection"]
    assert sel["target"] == "swapped"
    ref = sel["start_reference_perplexity"]
    # scored once by the starting model; the target knows the true answers far better than swapped ones
    assert all(h["holdout_perplexity"] == ref for h in sel["history"])
    assert ref > 2 * sel["history"][0]["forget_perplexity"]


def _selector(budget=0.05):
    s = RetainBudgetSelector([], [], 0, budget, holdout_items=None)
    s.holdout = [object()]  # only its presence matters to the pacing
    return s


@pytest.mark.parametrize("forget, retain, factor", [
    (1.11, 1.10 * 1.05 ** (1 / 4), 0.5),   # a quarter of the budget in one interval: too fast
    (1.10 * 1.0001, 1.10 * 1.0005, 2.0),   # forgetting stalls and the budget is untouched: faster
    (1.30, 1.10 * 1.05 ** (1 / 16), 1.0),  # on pace
])
def test_auto_lr_paces_the_retain_budget(forget, retain, factor):
    s = _selector()
    s.history = [{"forget_perplexity": 1.10, "retain_perplexity": 1.10, "holdout_perplexity": 4.0},
                 {"forget_perplexity": forget, "retain_perplexity": retain, "holdout_perplexity": 4.0,
                  "within_budget": retain <= 1.05 * 1.10}]
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    s._adapt_lr(opt, sched)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-4 * factor)
    sched.step()  # the schedule keeps the new rate
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-4 * factor)
    assert math.isclose(s.history[-1]["learning_rate"], 1e-4 * factor)


def test_an_interval_over_budget_is_taken_back(target_path, tmp_path):
    """The shipped npo recipe started at 10x its learning rate: the first interval spends the retain
    budget several times over. The selector halves the rate and returns the weights to the last state
    it may keep (optimizer moments cleared), so the run still forgets within budget instead of returning
    its input unchanged (what it did when the overshoot was kept and training went on from it)."""
    res = llm_forget.unlearn(str(shipped()["npo"]), model=target_path, output_dir=str(tmp_path / "over"),
                             learning_rate=3e-3, select_patience=6, eval_suite="none", disable_tqdm=True)
    sel = json.loads((res.output_dir / "results.json").read_text())["selection"]
    hist, start = sel["history"], sel["history"][0]
    assert not hist[1]["within_budget"], hist  # the precondition: the first interval overshoots
    assert hist[1]["restored_step"] == 0 and hist[1]["learning_rate"] == pytest.approx(1.5e-3)
    taken_back = [h for h in hist if not h["within_budget"]]
    assert all("restored_step" in h for h in taken_back)
    chosen = next(h for h in hist if h["step"] == sel["selected_step"])
    assert sel["selected_step"] > 0 and chosen["within_budget"]
    assert chosen["forget_perplexity"] > 1.05 * start["forget_perplexity"], hist  # it forgot something
