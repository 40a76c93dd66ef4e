"""The demo (every shipped recipe on the tiny target, side by side) and the bars each recipe meets in it:
forgetting towards retraining within the retain budget, ranking by forget quality at kept utility, the
zero-shot row."""

import hashlib
import json
import math
from pathlib import Path

import pytest

RECIPES = ["gradient_ascent", "grad_diff", "kl", "npo", "simnpo", "idk_po", "rmu", "row_target"]
UNSELECTED = ["swap_distill"]  # run a fixed number of epochs to their objective's fixed point, no selection
# Margins between the selector's calibration rows and the evaluation rows, which it never saw (other
# people): perplexity ratios there agree within a few percent across seeds, CPUs and thread counts.
ROW_MARGIN = 1.10
# Over-shooting retraining is judged as the evaluation sees it: the LOSS-attack AUC (forget members vs the
# 25 evaluation holdout rows) not below the retain model's by more than two standard errors of an AUC of
# 0.5 on 50 x 25 rows (Hanley-McNeil: sqrt((n1 + n2 + 1) / (12 n1 n2)) = 0.071). A forget-perplexity ratio to
# the retain model cannot carry this bar: the selector's reference of "never seen" is 5 holdout people, whose
# perplexity differs from the other 5's by 15-25 % from one zoo build to the next (eval forget / eval holdout
# perplexity of the chosen kl state: 0.81 on one build, 1.16 on another).
AUC_MARGIN = 2 * math.sqrt((50 + 25 + 1) / (12 * 50 * 25))


def _hashes(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in Path(folder).iterdir() if p.is_file()}


@pytest.fixture(scope="module")
def demo(target_path, retain_path, tmp_path_factory):
    """The demo runs every shipped recipe once; the tests below read its outputs."""
    from llm_forget.demo import run_demo

    before = _hashes(target_path)
    out = tmp_path_factory.mktemp("demo") / "demo"
    r = run_demo("tiny", out)
    r["input_unchanged"] = _hashes(target_path) == before
    return r


def test_demo_ranks_by_forget_quality_at_kept_utility(demo):
    """The references: the retain model (never saw the forget people) is what forgetting should reach; the
    target is what utility is kept against. The best recipe is the highest forget quality among those at
    >= 95 % of the target's utility, and it moved toward the retain model."""
    s = demo["summary"]
    assert set(s) == {"target", "retain", *RECIPES, *UNSELECTED}
    t, r = s["target"], s["retain"]
    assert r["forget_perplexity"] > 3 * t["forget_perplexity"]  # the retain model does not know them
    assert t["mia_auc"] > 0.9 and t["forget_quality"] < 0.01
    kept = {n for n in RECIPES + UNSELECTED if s[n]["model_utility"] >= 0.95 * t["model_utility"]}
    if kept:
        assert s[demo["best"]]["forget_quality"] == max(s[n]["forget_quality"] for n in kept), demo["report"]
        assert demo["best"] in kept
        tied = [n for n in kept if s[n]["forget_quality"] == s[demo["best"]]["forget_quality"]]
        assert s[demo["best"]]["model_utility"] == max(s[n]["model_utility"] for n in tied)  # a tie: higher utility
        b = s[demo["best"]]
        assert b["forget_quality"] > 10 * t["forget_quality"], demo["report"]
        # closer to the retain model than the target is (forget perplexity ratio 1 = retraining's)
        assert abs(math.log(b["forget_ppl_vs_retain"])) < abs(math.log(t["forget_ppl_vs_retain"]))
    else:
        assert demo["best"] is None and "none" in demo["report"]
    for m in s.values():  # every model gets the evidence columns and its distance to the retain model
        assert {"forget_quality", "model_utility", "mia_auc", "privleak", "forget_extraction_strength",
                "forget_ppl_vs_retain", "mia_auc_gap"} <= set(m)
    assert s["retain"]["forget_ppl_vs_retain"] == 1.0 and s["retain"]["mia_auc_gap"] == 0.0
    out = Path(demo["output"])
    assert json.loads((out / "summary.json").read_text()).keys() == s.keys()
    assert (out / "report.md").read_text().startswith("# llm_forget demo")
    assert (out / "tradeoff.png").stat().st_size > 1000
    assert demo["input_unchanged"], "the input model was modified"


def test_best_recipe_breaks_a_forget_quality_tie_by_utility():
    """Equal forget quality (a 50-row KS p-value takes few values: 0.272 for two recipes on one build) goes to the
    recipe keeping more of the target's utility, whatever the order; a recipe under 95 % never wins."""
    from llm_forget.demo import best_recipe

    rows = {n: {"model_utility": u, "forget_quality": fq} for n, u, fq in [
        ("target", 0.80, 1e-17), ("retain", 0.90, 1.0), ("a", 0.775, 0.272), ("b", 0.795, 0.272), ("c", 0.70, 0.9),
        ("d", 0.80, 0.1)]}
    assert best_recipe(rows) == ("b", 0.272)
    assert best_recipe(dict(reversed(list(rows.items())))) == ("b", 0.272)
    assert best_recipe({k: rows[k] for k in ("target", "retain", "c")}) == (None, 0.0)


def test_demo_zero_shot_row_forgets_a_person_named_only(demo):
    """The demo's zero-shot row: the first forget person unlearned from the name alone by the default recipe.
    References: the target answers that person's direct questions and the retain model does not; the run moves
    the person's answer probability at least a third of the way from the target's to the retain model's, answers
    fewer of them than the target, and keeps the neighbours' answers (>= 90 % of the target's share: one run's
    retain budget is +5 % perplexity). A third: fresh zoo builds from seeds 0-3 move it 60, 48, 44 and 74 % of the
    way (BENCHMARKS.md, "`make demo` on a fresh clone"); the run stops where its probes' perplexity reaches the
    holdout's, which leaves some of the five answers likely and others far below."""
    z = demo["zero_shot"]
    assert set(z) == {"target", "retain", "zero-shot"}
    t, r, u = z["target"], z["retain"], z["zero-shot"]
    assert t["named_answered"] >= 0.8 and r["named_answered"] <= 0.4 and t["named_rows"] >= 3
    assert r["named_probability"] < u["named_probability"] < t["named_probability"]
    assert t["named_probability"] - u["named_probability"] >= (t["named_probability"] - r["named_probability"]) / 3
    assert u["named_answered"] < t["named_answered"]
    assert u["neighbours_answered"] >= 0.9 * t["neighbours_answered"]
    out = Path(demo["output"])
    saved = json.loads((out / "zero_shot.json").read_text())
    assert saved["models"]["zero-shot"]["named_answered"] == u["named_answered"]
    assert "Zero-shot:" in (out / "report.md").read_text()
    run = json.loads((out / "runs" / "zero_shot" / "results.json").read_text())
    assert run["probes"]["forget"] > 0 and run["summary"]["named_probability"] == u["named_probability"]


def test_demo_recipes_side_by_side_give_the_same_numbers(demo, tmp_path):
    """Two recipes in two spawned processes of one thread each report exactly what the same recipes reported
    when the demo fixture ran them one after another with one thread (the 1-thread pass only: two processes
    of two threads would oversubscribe a 2-core CPU, and other thread counts give other numbers anyway)."""
    import torch

    from llm_forget.demo import run_demo

    if torch.get_num_threads() != 1:
        pytest.skip("compares with the demo fixture's 1-thread numbers")
    names = ["gradient_ascent", "idk_po"]
    r = run_demo("tiny", tmp_path / "demo", recipes=names, jobs=2, threads=1, zero_shot=False)
    assert r["jobs"] == 2 and r["threads_per_job"] == 1 and set(r["summary"]) == {"target", "retain", *names}
    for n in names + ["target", "retain"]:
        got, want = r["summary"][n], demo["summary"][n]
        assert got.keys() == want.keys(), n
        for k in (k for k in got if not k.endswith("_seconds")):  # timings differ
            assert got[k] == want[k] or (got[k] != got[k] and want[k] != want[k]), (n, k)  # NaN == NaN here


@pytest.mark.parametrize("method", RECIPES)
def test_recipe_moves_toward_retraining_within_its_budget(method, demo):
    """Each recipe keeps the selection's promise (retain perplexity within (1 + budget) x the start on its
    calibration rows, and within ROW_MARGIN of that on the evaluation rows), forgets (forget perplexity
    above the target's) and does not over-shoot retraining by more than the margin."""
    s = demo["summary"]
    run = Path(demo["output"]) / "runs" / method
    results = json.loads((run / "results.json").read_text())
    sel = results["selection"]
    chosen = next(h for h in sel["history"] if h["step"] == sel["selected_step"])
    assert chosen["within_budget"]
    assert chosen["retain_perplexity"] <= (1 + sel["budget"]) * sel["start_retain_perplexity"]
    gap = [abs(math.log(h["forget_perplexity"] / h["holdout_perplexity"])) for h in sel["history"]]
    assert abs(math.log(chosen["forget_perplexity"] / chosen["holdout_perplexity"])) <= gap[0]  # closer than the target
    t, r = s["target"], s["retain"]
    assert s[method]["retain_perplexity"] <= (1 + sel["budget"]) * ROW_MARGIN * t["retain_perplexity"]
    assert s[method]["forget_perplexity"] >= t["forget_perplexity"]
    assert s[method]["mia_auc"] >= r["mia_auc"] - AUC_MARGIN, s[method]  # not past retraining
    assert (run / "model" / "model.safetensors").exists()
    assert results["counts"]["forget"] == 50 and results["environment"]["world_size"] == 1
    assert not set(results["rows"]["calibration"]["holdout"]) & set(demo["split"]["evaluation"]["holdout"])


@pytest.mark.parametrize("method", UNSELECTED)
def test_unselected_recipe_forgets_without_passing_retraining(method, demo):
    """A recipe without checkpoint selection still forgets (forget perplexity above the target's), stops short
    of over-shooting the retain model by more than the margin, and keeps the retain rows within the
    selection's own bar (+5 % and the row margin)."""
    s, t, r = demo["summary"], demo["summary"]["target"], demo["summary"]["retain"]
    assert "selection" not in json.loads((Path(demo["output"]) / "runs" / method / "results.json").read_text())
    assert t["forget_perplexity"] < s[method]["forget_perplexity"]
    assert s[method]["mia_auc"] >= r["mia_auc"] - AUC_MARGIN, s[method]  # not past retraining
    assert s[method]["retain_perplexity"] <= 1.05 * ROW_MARGIN * t["retain_perplexity"]
