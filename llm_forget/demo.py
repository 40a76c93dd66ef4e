"""The demo: target and retain models on the built-in benchmark, every shipped recipe, one table.

    llm-forget demo [--model tiny|smollm2-135m|PATH] [--output DIR] [--no-zero-shot]
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from .jobs import run_jobs

logger = logging.getLogger(__name__)

COLUMNS = [("forget_perplexity", "forget ppl", "{:.3g}"), ("retain_perplexity", "retain ppl", "{:.3g}"),
           ("forget_exact_memorization", "forget EM", "{:.3f}"), ("retain_exact_memorization", "retain EM", "{:.3f}"),
           ("forget_extraction_strength", "forget ES", "{:.3f}"), ("forget_quality", "forget quality", "{:.2g}"),
           ("forget_nll_quality", "NLL KS p", "{:.2g}"),
           ("model_utility", "utility*", "{:.3f}"), ("mia_auc", "MIA AUC", "{:.3f}"), ("privleak", "privleak", "{:.1f}"),
           ("utility_vs_target", "utility / target", "{:.2f}"),
           ("forget_ppl_vs_retain", "forget ppl / retain's", "{:.2f}"),
           ("mia_auc_gap", "|AUC - retain's|", "{:.3f}"), ("wall_seconds", "wall s", "{:.1f}")]
NOTE = ("forget quality: KS-test p-value of the forget truth ratios against the retain model's (high = "
        "indistinguishable from retraining). NLL KS p: the same test on the forget rows' answer NLLs (small when "
        "rows stay memorised or all are pushed past retraining's spread, which forget quality can miss). "
        "utility*: harmonic mean of retain answer probability and retain "
        "truth ratio on the built-in benchmark (not TOFU's 9-number utility, which needs world knowledge). "
        "privleak (MUSE's form, on the Min-K 40 % attack): (AUC_retain - AUC) / (1 - AUC_retain) x 100, 0 is "
        "ideal, negative = forget rows still stand out, positive = over-unlearned. The last three columns are distances to the "
        "retain model: forget ppl / retain's is 1 for a model that forgot as much as retraining (> 1 over-forgets). "
        "Evaluation rows exclude every row a run calibrated on (llm_forget.selection.calibration_split).")


def table(summary: dict) -> str:
    """A markdown table, one row per model of a demo summary."""
    head = "| model | " + " | ".join(c[1] for c in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 1)]
    for name, m in summary.items():
        cells = [fmt.format(m[k]) if isinstance(m.get(k), (int, float)) else "–" for k, _, fmt in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def best_recipe(summary: dict, min_utility: float = 0.95) -> tuple[str | None, float]:
    """The recipe with the highest forget quality (closest to retraining) among those keeping at least
    `min_utility` of the target's model utility, a tie (a KS p-value on a few dozen rows takes few values) going
    to the higher utility; (None, 0.0) when none keeps it."""
    floor = min_utility * summary["target"]["model_utility"]
    kept = {n: m for n, m in summary.items() if n not in ("target", "retain") and m["model_utility"] >= floor}
    if not kept:
        return None, 0.0
    best = max(kept, key=lambda n: (kept[n]["forget_quality"], kept[n]["model_utility"]))
    return best, kept[best]["forget_quality"]


def add_distances(summary: dict) -> None:
    """Each model's distance to the retain model (retrained without the forget set): its forget
    perplexity over the retain model's (1 = the same; > 1 over-forgets) and |MIA AUC − the retain model's|."""
    r = summary["retain"]
    for m in summary.values():
        m["forget_ppl_vs_retain"] = m["forget_perplexity"] / r["forget_perplexity"]
        m["mia_auc_gap"] = abs(m["mia_auc"] - r["mia_auc"])
        m["utility_vs_target"] = m["model_utility"] / summary["target"]["model_utility"]


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, m in summary.items():
        ax.scatter(m["forget_perplexity"], m["retain_perplexity"], marker="*" if name in ("target", "retain") else "o",
                   s=120 if name in ("target", "retain") else 50)
        ax.annotate(name, (m["forget_perplexity"], m["retain_perplexity"]), fontsize=8, xytext=(4, 4),
                    textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("forget perplexity (higher = more forgotten)")
    ax.set_ylabel("retain perplexity (lower = more kept)")
    ax.set_title("llm_forget demo: forgetting vs keeping")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _run_recipe(name: str, recipe: str, target: str, out: str, sets: dict, ref: dict, tr) -> tuple[dict, str, str]:
    """One recipe: unlearn from `target` into out/runs/name, then the demo's evaluation (a process pool's task).
    Returns (summary row, output folder, model folder)."""
    from .api import unlearn
    from .data.encode import Encoder
    from .models import load_tokenizer

    logger.info("demo: running recipe %s", name)
    t = time.perf_counter()
    res = unlearn(recipe, model=target, output_dir=str(Path(out) / "runs" / name), overwrite=True,
                  disable_tqdm=True, eval_suite="none")
    row = _evaluate(res.model_dir, Encoder(load_tokenizer(target)), sets, ref, tr)
    return {**row, "wall_seconds": time.perf_counter() - t}, str(res.output_dir), str(res.model_dir)


ZERO_SHOT_RECIPE = "kl"  # the default recipe (README: "Which recipe")


def _run_described(recipe: str, target: str, retain: str, out: str, name: str, rows: dict) -> dict:
    """The zero-shot row: forget `name` from the name alone (a described request; llm_forget/probe.py) with
    the default recipe as shipped, then `zero_shot_rows` for target, retain model and the result (a process
    pool's task). Returns the run's folder, its seconds and the rows."""
    from . import io
    from .api import unlearn
    from .data.encode import Encoder
    from .models import load_tokenizer

    logger.info("demo: forgetting %r from the name alone (%s)", name, ZERO_SHOT_RECIPE)
    t = time.perf_counter()
    req = Path(out) / "zero_shot_request.json"
    io.write_json(req, {"kind": "concept", "description": name})
    res = unlearn(recipe, model=target, request=str(req), output_dir=str(Path(out) / "runs" / "zero_shot"),
                  overwrite=True, disable_tqdm=True, eval_suite="none")
    secs = time.perf_counter() - t
    z = zero_shot_rows({"target": target, "retain": retain, "zero-shot": res.model_dir},
                       Encoder(load_tokenizer(target)), name, rows)
    z["zero-shot"]["wall_seconds"] = secs
    return {"run": str(res.output_dir), "rows": z}


def zero_shot_rows(models: dict, encoder, name: str, rows: dict) -> dict:
    """Per model: share of the named person's direct questions, of the other forget people's and of the
    retain people's (neighbours) that greedy decoding answers (evaluation.scope.answer_scores), and the
    named person's answer probability."""
    import torch

    from .evaluation.scope import answer_scores
    from .models import load_model

    groups = {"named": [r for r in rows["forget"] if r.get("person") == name],
              "other_forget": [r for r in rows["forget"] if r.get("person") != name], "neighbours": rows["retain"]}
    out = {}
    for label, path in models.items():
        model = load_model(str(path))
        with torch.no_grad():
            sc = {g: answer_scores(model, encoder, rs) for g, rs in groups.items()}
        out[label] = {**{f"{g}_answered": sum(x["correct"] for x in v) / len(v) for g, v in sc.items()},
                      "named_probability": sum(x["probability"] for x in sc["named"]) / len(sc["named"]),
                      "named_rows": len(groups["named"])}
    return out


def zero_shot_table(z: dict, name: str) -> str:
    lines = [f"Zero-shot: {name} forgotten from the name alone ({ZERO_SHOT_RECIPE} as shipped, the request "
             f"`{{\"kind\": \"concept\", \"description\": \"{name}\"}}`; the run probes the model for what it "
             "knows, llm_forget/probe.py). Share of direct questions greedy decoding still answers:", "",
             "| model | the named person | the other forget people | neighbours (retain people) | "
             "named: answer prob. |",
             "|---|---|---|---|---|"]
    for label, m in z.items():
        lines.append(f"| {label} | {m['named_answered']:.2f} | {m['other_forget_answered']:.2f} | "
                     f"{m['neighbours_answered']:.2f} | {m['named_probability']:.3f} |")
    return "\n".join(lines)


def evaluation_setup(target: str, retain: str) -> tuple[dict, dict, dict, object, str, dict]:
    """What the demo evaluates every model on, built once: (rows, split, sets, encoder, tr, ref) = the built-in
    forget / retain / holdout rows; their `split` into calibration and evaluation indices
    (selection.calibration_split); the evaluation `sets`, which leave out every row a run calibrates on (its
    selection samples); the `encoder` of the target's tokenizer; the truth ratio's denominator
    `tr`; and the retain model's side `ref` (evaluation.quick.retain_reference)."""
    from .config import UnlearnConfig
    from .data.benchmark import truth_ratio_correct_for
    from .data.encode import Encoder
    from .data.readers import read_rows
    from .evaluation.quick import retain_reference
    from .models import load_tokenizer
    from .selection import calibration_split

    rows = {k: read_rows(f"builtin:{k}") for k in ("forget", "retain", "holdout")}
    split = calibration_split(rows["forget"], rows["retain"], rows["holdout"], UnlearnConfig.select_rows, 0)
    sets = {k: [v[i] for i in split["evaluation"][k]] for k, v in rows.items()}
    encoder = Encoder(load_tokenizer(target))
    tr = truth_ratio_correct_for(sets["forget"])
    return rows, split, sets, encoder, tr, retain_reference(retain, encoder, sets, truth_ratio_correct=tr)


def _evaluate(model_dir, encoder, sets: dict, ref: dict, tr) -> dict:
    """The demo's evaluation of one model: quick_eval's summary on the evaluation rows, against the retain model."""
    from .evaluation.quick import quick_eval
    from .models import load_model

    return quick_eval(load_model(str(model_dir)), encoder, sets, retain=ref, truth_ratio_correct=tr)["summary"]


def run_demo(model: str = "tiny", output: str | Path = "runs/demo", overwrite: bool = False,
             recipes: list[str] | None = None, jobs: int | None = None, threads: int | None = None,
             zero_shot: bool = True) -> dict:
    """Target and retain model, every shipped recipe (or `recipes`), one table; with `zero_shot`, also the
    first forget person forgotten from the name alone by the default recipe (its own table). The runs go side
    by side in `jobs` processes of `threads` torch threads each (default: `threads.jobs_and_threads`, one
    thread per free CPU); each run is the same as alone with that many threads."""
    from . import io
    from .api import prepare_output_dir
    from .recipes_index import unlearning_recipes
    from .reporting import attach_evaluation
    from .threads import jobs_and_threads

    found = unlearning_recipes()  # every argument checked before the output folder is touched
    names = recipes or list(found)
    unknown = [n for n in names if n not in found]
    if unknown:
        from .errors import UserError

        raise UserError(f"unknown recipe(s) {', '.join(unknown)}; shipped: {', '.join(found)}")
    n_jobs, each = jobs_and_threads(len(names) + int(zero_shot), jobs, threads)
    out = Path(output)
    prepare_output_dir(out, overwrite, False)
    t0 = time.perf_counter()
    if model == "tiny":
        from . import zoo

        pair = ("tiny-target", "tiny-retain")
        target, retain = (str(p) for p in zoo.get_side_by_side(pair, jobs=min(n_jobs, 2), threads=each))
        ft_seconds = time.perf_counter() - t0
    else:
        from .finetune import finetune

        kw = dict(epochs=5, learning_rate=5e-5, batch_size=16)
        target = finetune(model, "builtin:train", out / "target", **kw)["output_dir"]
        retain = finetune(model, "builtin:retain", out / "retain", **kw)["output_dir"]
        ft_seconds = time.perf_counter() - t0
    # the rows each run calibrates on (its selection samples) are left out of what the demo reports; the retain
    # model's side is computed once
    rows, split, sets, encoder, tr, ref = evaluation_setup(target, retain)

    summary = {}
    for name, path in (("target", target), ("retain", retain)):
        summary[name] = {**_evaluate(path, encoder, sets, ref, tr), "wall_seconds": ft_seconds / 2}
    tasks = [(_run_recipe, n, str(found[n]), target, str(out), sets, ref, tr) for n in names]
    named = rows["forget"][0]["person"]
    if zero_shot:  # first: the shipped recipes' order ends with the longest runs (simnpo, swap_distill)
        tasks.insert(0, (_run_described, str(found[ZERO_SHOT_RECIPE]), target, retain, str(out), named, rows))
    done = run_jobs(tasks, n_jobs, each)
    described = done.pop(0) if zero_shot else None
    for name, (row, run_dir, _) in zip(names, done):
        summary[name] = row
        attach_evaluation(run_dir, {k: v for k, v in row.items() if k != "wall_seconds"})
        ran = json.loads((Path(run_dir) / "results.json").read_text()).get("rows", {}).get("evaluation")
        if ran and ran != split["evaluation"]:
            raise RuntimeError(f"recipe {name} calibrated on rows the demo reports on; set select_rows/seed to "
                               "the defaults")
    add_distances(summary)
    best, fq = best_recipe(summary)
    verdict = (f"**{best}** (forget quality {fq:.2g}, utility {summary[best]['utility_vs_target']:.1%} of the "
               f"target's)" if best else "none: no recipe kept 95 % of the target's utility")
    zs = None
    if described is not None:
        zs = described["rows"]
        attach_evaluation(described["run"], {k: v for k, v in zs["zero-shot"].items() if k != "wall_seconds"})
    report = (f"# llm_forget demo ({model})\n\n{table(summary)}\n\n{NOTE}\n\n"
              f"Best recipe (highest forget quality among those keeping >= 95 % of the target's utility, a tie to "
              f"the higher utility): "
              f"{verdict}.\n\n" + (zero_shot_table(zs, named) + "\n\n" if zs else "") +
              f"Total wall time {time.perf_counter() - t0:.0f}s.\n")
    if zs:
        io.write_json(out / "zero_shot.json", {"description": named, "recipe": ZERO_SHOT_RECIPE, "models": zs})
    io.write_json(out / "summary.json", summary)
    io.write_text(out / "report.md", report)
    plot(summary, out / "tradeoff.png")
    return {"summary": summary, "best": best, "best_forget_quality": fq, "report": report, "output": str(out),
            "split": split, "jobs": n_jobs, "threads_per_job": each, "zero_shot": zs}
