"""How forgetting spreads over the forget rows: per-row answer NLL quantiles of unlearned models against the retain
model's, on the built-in benchmark's evaluation rows (the demo's), beside the demo's forget quality.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/forget_row_spread.py
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/forget_row_spread.py --runs kl,hinge_neighbours
    LLM_FORGET_CACHE=DIR LLM_FORGET_SEED=S ...      # another zoo build (tiny-target / tiny-retain from seed S)

Runs (each a shipped recipe from the zoo's tiny-target, as `llm-forget demo` runs it): kl, swap_distill, hinge
(swap_distill with `divergence: hinge`), hinge_neighbours (also `teacher_names: neighbours`), row_target (per-row
never-seen targets, llm_forget/methods/row_target.py), row_target_stall (the same, ending once 12 measurements in a
row kept no new state: `select_stall: 12`), row_target_lr (the same from a starting rate 10 % higher: another draw of
one method, its path perturbed), row_target_budget10 (the same with a +10 % retain budget instead of +5 %: does a
looser budget reach the never-seen level, and at what utility), kl_retain2 / kl_retain4 / row_target_retain2 (2 or 4
retain rows per forget row and step, `retain_per_forget`: does a lower-variance retain term keep more utility at the
same forgetting), kl_similar / row_target_similar (each forget row paired with its most similar retain rows,
`retain_pairing: similar`: does protecting the rows an ascent moves most keep more utility). Per model: the answer
NLL of each forget row (mean over its answer tokens) at q10 / q25 / median / q75 / q90, the two-sample KS p-value of
those NLLs against the retain model's (`nll_ks_p`, the evaluation's `forget_nll_quality`: 1 = the same spread as
retraining), and the demo's forget quality
(the KS p-value on truth ratios), forget truth ratio, forget perplexity, MIA AUC and utility. The forget quality of
the shipped metric and `nll_ks_p` test two different things: whether the model prefers the true answer to its
perturbations as much as retraining does, and whether it is as (un)sure of each true answer as retraining is.
Per run also its wall seconds, the step it selected and the last step it trained, and what the selector saw on its
calibration rows (`calibration`: forget over reference perplexity at the selected step and at most within budget).
Results:
benchmarks/results/forget_row_spread.json (`--results STEM` for another file), one entry per zoo build; a model not
rerun keeps its earlier figures, with the commit that measured them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("LLM_FORGET_CACHE", str(ROOT / ".cache" / "llm_forget"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(ROOT / "benchmarks"))
from _common import run_info, save_per_model

RUNS = {"kl": ("kl", {}), "swap_distill": ("swap_distill", {}),
        "hinge": ("swap_distill", {"divergence": "hinge"}),
        "hinge_neighbours": ("swap_distill", {"divergence": "hinge", "teacher_names": "neighbours"}),
        "row_target": ("row_target", {}), "row_target_stall": ("row_target", {"select_stall": 12}),
        "row_target_lr": ("row_target", {"learning_rate": 1.1e-4}),
        "row_target_budget10": ("row_target", {"retain_budget": 0.10}),
        "kl_retain2": ("kl", {"retain_per_forget": 2}), "kl_retain4": ("kl", {"retain_per_forget": 4}),
        "row_target_retain2": ("row_target", {"retain_per_forget": 2}),
        "kl_similar": ("kl", {"retain_pairing": "similar"}),
        "row_target_similar": ("row_target", {"retain_pairing": "similar"})}
OUT = ROOT / "benchmarks" / "results" / "forget_row_spread.json"
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
KEEP = ("forget_quality", "forget_truth_ratio", "forget_perplexity", "mia_auc", "model_utility")


def quantiles(x: list[float]) -> list[float]:
    """Nearest-rank quantiles of `x` at QUANTILES (x[round(q·(n−1))] of the sorted values)."""
    s = sorted(x)
    return [round(s[round(q * (len(s) - 1))], 3) for q in QUANTILES]


def calibration_summary(hist: list[dict], selected: int | None) -> dict:
    """What the selector saw on its calibration rows: at the selected step, forget perplexity over the reference's
    (1 = never-seen level) and retain perplexity over the start's; the highest forget/reference ratio of any
    within-budget measurement, and how many measurements were over the retain budget."""
    if not hist or "holdout_perplexity" not in hist[0]:
        return {}
    ratio = lambda h: round(h["forget_perplexity"] / h["holdout_perplexity"], 3)  # noqa: E731
    sel = next((h for h in hist if h["step"] == selected), hist[0])
    inside = [ratio(h) for h in hist if h["within_budget"]]
    return {"selected_forget_over_reference": ratio(sel),
            "selected_retain_over_start": round(sel["retain_perplexity"] / hist[0]["retain_perplexity"], 4),
            "max_forget_over_reference_within_budget": max(inside) if inside else None,
            "over_budget_measurements": sum(not h["within_budget"] for h in hist), "measurements": len(hist)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated of {', '.join(RUNS)}")
    ap.add_argument("--results", default="forget_row_spread",
                    help="results file stem in benchmarks/results (another machine's builds: another file)")
    args = ap.parse_args()
    unknown = [r for r in args.runs.split(",") if r not in RUNS]
    if unknown:
        ap.error(f"unknown run {unknown[0]!r}; choose from {', '.join(RUNS)}")
    import llm_forget
    from llm_forget import zoo
    from llm_forget.demo import evaluation_setup
    from llm_forget.evaluation.quick import quick_eval
    from llm_forget.models import load_model
    from llm_forget.recipes_index import shipped

    target, retain = (str(p) for p in zoo.get_side_by_side(("tiny-target", "tiny-retain")))
    _, _, sets, enc, tr, ref = evaluation_setup(target, retain)

    def measure(path: str) -> dict:
        ev = quick_eval(load_model(path), enc, sets, retain=ref, truth_ratio_correct=tr)
        return {**{k: ev["summary"].get(k) for k in KEEP}, "nll_ks_p": ev["summary"]["forget_nll_quality"],
                "nll_quantiles": quantiles([r["nll"] for r in ev["per_item"]["forget"]])}

    res = {"run": run_info(), "seed": zoo.seed(), "quantiles": list(QUANTILES), "models": {}}
    res["models"]["retain"] = measure(retain)
    res["models"]["target"] = measure(target)
    for name in args.runs.split(","):
        recipe, over = RUNS[name]
        with tempfile.TemporaryDirectory() as d:
            run = llm_forget.unlearn(str(shipped()[recipe]), model=target, output_dir=f"{d}/run", eval_suite="none",
                                     disable_tqdm=True, **over)
            sel = json.loads((run.output_dir / "results.json").read_text()).get("selection") or {}
            res["models"][name] = measure(str(run.model_dir))
        hist = sel.get("history") or [{}]
        res["models"][name].update(settings={"recipe": recipe, **over},
                                   wall_seconds=round(run.timings["total_seconds"], 1),
                                   selected_step=sel.get("selected_step"), last_step=hist[-1].get("step"),
                                   calibration=calibration_summary(hist, sel.get("selected_step")))
    out = OUT.with_name(f"{args.results}.json")
    old = json.loads(out.read_text()).get(f"seed{zoo.seed()}", {}) if out.exists() else {}
    for name, m in old.get("models", {}).items():  # earlier runs not repeated here, marked with their commit
        res["models"].setdefault(name, {**m, "commit": m.get("commit") or old["run"].get("commit")})
    for name, m in res["models"].items():
        print(f"{name:18s} nll {m['nll_quantiles']}  nll_ks_p {m['nll_ks_p']:.3g}  "
              f"forget quality {m['forget_quality']:.3g}  MIA {m['mia_auc']:.3f}", flush=True)
    save_per_model(args.results, f"seed{zoo.seed()}", res)


if __name__ == "__main__":
    main()
