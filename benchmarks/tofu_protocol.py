"""TOFU protocol: target and retain models, every recipe, eval/tofu.yaml, cost against retraining.

    # (a) a tiny Llama trained from scratch on full TOFU, every recipe, forget01/05/10
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/tofu_protocol.py --scale tiny
    # (b) SmolLM2-135M on the reduced protocol (forget01 + a fixed sample of retain authors)
    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/tofu_protocol.py --scale smollm2 --threads 2
    # (c) the same with the recipes exactly as shipped (no per-scale step cap, budget, selection or learning rate)
    .venv/bin/python benchmarks/tofu_protocol.py --scale smollm2 --threads 2 --recipes kl --shipped --results tofu_smollm2_shipped

Data (../shared/data/tofu): full TOFU = retain90 + forget10 (4,000 rows, 200 authors of 20 rows).
Holdout = retain90 rows 3560-3599 (two whole authors), kept out of every model's training.
  target       = full − holdout                       (one target for every split)
  retain_SPLIT = full − forget SPLIT − holdout        (the retrained model: forget quality's reference)
Every recipe starts from the target with its shipped settings (llm_forget/recipes/*.yaml, their retain
budget = the tuning procedure), with forget = the split, retain = retain_SPLIT rows, and is evaluated with
the shipped tofu suite against retain_SPLIT's results. Rows carry their author (row // 20), so the holdout
splits into a calibration author (the recipes' selection) and an evaluation author (the suite's MIA
non-members); the suite's retain rows (retain_perturbed_400) are kept out of the recipes' calibration rows. Cost against retraining = the recipe's wall time
(loading, unlearning, checkpoint selection, saving) / the wall time of fine-tuning retain_SPLIT.

Reduced protocol for SmolLM2 (`--scale smollm2`, sized to run in under 90 min on 2 CPU cores): forget01 (2 authors) plus
the first N authors of retain_perturbed_400 (default 8: 160 training rows); evaluation on the same suite
with retain = the first 40 of those authors' retain_perturbed rows and real_authors / world_facts cut to
their first 40 rows.

Writes benchmarks/results/tofu_SCALE.json (raw numbers, appended as it goes: a stopped run keeps what it
finished and a rerun skips those rows; each row records the code version that measured it), tofu_SCALE.md
(tables) and tofu_SCALE_SPLIT.png (forget quality vs model utility, target and retain points included). A recipe's
finished run folder is reused only when it was made by the same code version with the same options; `--fresh`
reruns every recipe row (the fine-tuned target and retain models are kept).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("LLM_FORGET_CACHE", str(ROOT / ".cache" / "llm_forget"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
from llm_forget.zoo import TINY, build_tiny  # noqa: E402  (after the environment above)
from _common import code_version, cpu_model  # noqa: E402  (benchmarks/, the script's folder)
DATA = ROOT.parent / "shared" / "data" / "tofu"
os.environ.setdefault("LLM_FORGET_DATA_DIR", str(DATA.parent))  # the local mirror of locuslab/TOFU
RESULTS = ROOT / "benchmarks" / "results"
HOLDOUT = (3560, 3600)
ROWS_PER_AUTHOR = 20

# model settings per scale; `finetune` = llm_forget.finetune.finetune keywords
SCALES = {
    "tiny": dict(base="tofu-tiny", finetune=dict(epochs=8, learning_rate=1e-3, batch_size=32, max_length=256),
                 splits=["forget01", "forget05", "forget10"],
                 recipes=["gradient_ascent", "grad_diff", "kl", "npo", "simnpo", "rmu", "idk_po"],
                 unlearn=dict(max_steps=200)),
    "smollm2": dict(base="smollm2-135m", finetune=dict(epochs=4, learning_rate=5e-5, batch_size=8, max_length=256),
                    splits=["forget01"], recipes=["grad_diff", "npo", "simnpo"], retain_authors=8, eval_rows=40,
                    unlearn=dict(max_steps=30, per_device_train_batch_size=4, select_every=5, select_rows=40,
                                 retain_budget=0.25, select_patience=2)),
}
# shipped learning rates are tuned for the tiny model; a pretrained 135M model takes ~10x smaller steps
# (at 3e-5, 30 steps moved forget perplexity only 2.40 -> 2.58: nothing was forgotten)
SMOLLM2_LR = {"gradient_ascent": 5e-5, "grad_diff": 1e-4, "kl": 2e-4, "npo": 2e-4, "simnpo": 1e-4, "rmu": 5e-4,
              "idk_po": 5e-5}
TINY_MODEL = {**TINY, "max_position_embeddings": 512}  # the zoo's tiny Llama; TOFU rows run longer


def _load(name: str) -> list[dict]:
    return json.loads((DATA / f"{name}.json").read_text(encoding="utf-8"))


def _key(r: dict) -> str:
    return r["question"].strip()


def tofu_splits(scale: dict) -> dict:
    """{"full", "holdout", "target", "forget": {split: rows}, "retain": {split: rows}, ...} per the docstring."""
    r90, f10 = _load("retain90"), _load("forget10")
    full = [{**r, "author": i // ROWS_PER_AUTHOR} for i, r in enumerate(r90 + f10)]  # splits keep authors whole
    author = {_key(r): r["author"] for r in full}
    holdout = full[HOLDOUT[0]:HOLDOUT[1]]
    drop = {_key(r) for r in holdout}
    forget = {s: [{**r, "author": author[_key(r)]} for r in _load(s)] for s in scale["splits"]}
    out = {"holdout": holdout, "forget": forget, "retain": {}}
    keep = None
    if scale.get("retain_authors"):  # reduced protocol: only the first N authors of retain_perturbed
        rp = _load("retain_perturbed_400")
        index = {_key(r): i for i, r in enumerate(full)}
        authors = []
        for r in rp:
            a = index[_key(r)] // ROWS_PER_AUTHOR
            if a not in authors:
                authors.append(a)
        authors = authors[:scale["retain_authors"]]
        keep = {_key(r) for a in authors for r in full[a * ROWS_PER_AUTHOR:(a + 1) * ROWS_PER_AUTHOR]}
        out["retain_perturbed"] = [r for r in rp if _key(r) in keep]
        out["authors"] = authors
    for s, rows in forget.items():
        fk = {_key(r) for r in rows}
        out["retain"][s] = [r for r in full if _key(r) not in fk | drop and (keep is None or _key(r) in keep)]
    every = {_key(r) for rows in forget.values() for r in rows}
    out["target"] = [r for r in full if _key(r) not in drop and (keep is None or _key(r) in keep | every)]
    return out


def build_tiny_base(out: Path) -> Path:
    """The zoo's tiny Llama (1.3 M non-embedding parameters, positions up to 512) with its byte-level BPE
    trained on every TOFU text instead of the built-in benchmark."""
    if (out / "config.json").exists():
        return out

    def texts():
        for f in sorted(DATA.glob("*.json")):
            for r in json.loads(f.read_text(encoding="utf-8")):
                for v in r.values():
                    yield from ([v] if isinstance(v, str) else [x for x in v if isinstance(x, str)])

    build_tiny(out, TINY_MODEL, texts())
    return out


def train(base: str, rows: list[dict], out: Path, settings: dict) -> dict:
    """Fine-tune once; the timing is kept in OUT/train.json so a rerun reuses the model and its cost."""
    from llm_forget import io
    from llm_forget.finetune import finetune

    meta = out / "train.json"
    if (out / "config.json").exists() and meta.exists():
        return json.loads(meta.read_text())
    info = finetune(base, rows, out, progress=False, **settings)
    info.update(rows=len(rows), settings=settings)
    io.write_json(meta, info)
    return info


def holdout_evaluation_rows(holdout: list[dict], select_rows: int) -> list[int]:
    """[start, stop) in retain90 of the holdout rows the evaluation reports on: the author the recipes do not
    calibrate on (llm_forget.selection.calibration_split, the same call unlearn() makes)."""
    from llm_forget.selection import calibration_split

    ev = calibration_split([], None, holdout, select_rows)["evaluation"]["holdout"]
    assert ev == list(range(ev[0], ev[-1] + 1)), "the evaluation holdout is one contiguous author"
    return [HOLDOUT[0] + ev[0], HOLDOUT[0] + ev[-1] + 1]


def suite_for(scale_name: str, split_data: dict, work: Path) -> dict | str:
    """The shipped tofu suite with the holdout cut to its evaluation author, and for the reduced protocol
    pointing at the reduced files."""
    from llm_forget import io
    from llm_forget.config import UnlearnConfig
    from llm_forget.evaluation.suite import load_suite

    cfg = load_suite("tofu")
    rows = holdout_evaluation_rows(split_data["holdout"], SCALES[scale_name]["unlearn"].get(
        "select_rows", UnlearnConfig.select_rows))
    cfg["datasets"]["holdout"] = {**cfg["datasets"]["holdout"], "rows": rows}
    if scale_name == "tiny":
        cfg["name"] = "tofu-holdout-evaluation-half"
        return cfg
    n = SCALES[scale_name]["eval_rows"]
    rp = work / "data" / "retain_perturbed_reduced.json"
    io.write_json(rp, split_data["retain_perturbed"])
    cfg["datasets"]["retain"] = {"data": str(rp), "rows": [0, n]}
    for name in ("real_authors", "world_facts"):
        cfg["datasets"][name] = {**cfg["datasets"][name], "rows": [0, n]}
    cfg["name"] = "tofu-reduced"
    return cfg


def evaluate(model: str, suite, split: str, out: Path, retain_results: Path | None) -> dict:
    from llm_forget.evaluation.suite import evaluate as ev

    t = time.perf_counter()
    r = ev(model, suite, data_dir=str(DATA), variables={"forget_split": split}, output=str(out),
           retain_model=str(retain_results) if retain_results else None, progress=False,
           overwrite=retain_results is not None)  # an unlearned model is new each run
    s = {k: v for k, v in r["summary"].items() if isinstance(v, (int, float))}
    s["eval_seconds"] = time.perf_counter() - t
    return s


def unlearn_one(recipe: str, scale_name: str, target: Path, split: str, files: dict, out: Path,
                select_target: str = "recipe", lr: str | None = None, options: dict | None = None,
                fresh: bool = False) -> dict:
    """Run one recipe from the target into OUT; a finished run in OUT is reused only when its benchmark.json
    records the same code version (benchmarks/_common.code_version) and options, and never with `fresh`."""
    from llm_forget import io
    from llm_forget.api import unlearn

    extra = dict(SCALES[scale_name]["unlearn"], select_avoid=str(files["avoid"]), **(options or {}))
    if select_target != "recipe":
        extra["select_target"] = select_target
    if scale_name == "smollm2" and not SCALES[scale_name].get("shipped"):
        extra["learning_rate"] = SMOLLM2_LR[recipe]
    if lr is not None:
        extra["learning_rate"] = float(lr)
    done, stamp = out / "results.json", out / "benchmark.json"
    key = {"code": code_version(), "recipe": recipe, "options": {k: str(v) for k, v in extra.items()}}
    if not fresh and key["code"] and done.is_file() and (out / "model").is_dir() and stamp.is_file() \
            and json.loads(stamp.read_text()) == key:
        # finished earlier by the same code with the same options (a stopped benchmark run): reuse it
        timings = json.loads(done.read_text())["timings"]
        secs = timings["total_seconds"]
        print(f"reusing {out} (finished at {key['code']})", flush=True)
    else:
        stamp.unlink(missing_ok=True)
        t = time.perf_counter()
        timings = unlearn(str(ROOT / "llm_forget" / "recipes" / f"{recipe}.yaml"), model=str(target),
                          forget=str(files["forget"]), retain=str(files["retain"]), holdout=str(files["holdout"]),
                          output_dir=str(out), eval_suite="none", overwrite=True, **extra).timings
        secs = time.perf_counter() - t
        io.write_json(stamp, key)
    sel = json.loads(done.read_text()).get("selection") or {}
    return {"unlearn_seconds": secs, "train_seconds": timings.get("train_seconds"), "code": key["code"],
            "selection": {k: v for k, v in sel.items() if k != "history"}}


def robustness(model: Path, target: Path, retain: Path, files: dict) -> dict:
    from llm_forget.evaluation.robustness import attack

    r = attack(str(model), str(target), "robustness", retain_model=str(retain),
               variables={"forget_data": str(files["forget"]), "retain_data": str(files["retain"])},
               only=["relearn"])
    rl = r["attacks"]["relearn"]["steps_25"]
    return {"relearn25_recovery": rl["model"]["recovery"], "relearn25_retain_recovery": rl["retain"]["recovery"],
            "relearn25_after": rl["model"]["after"], "relearn25_retain_after": rl["retain"]["after"]}


COLS = [("forget_quality", "forget quality", "{:.3g}"), ("model_utility", "model utility (of target)", "{:.3f}"),
        ("forget_truth_ratio", "forget TR", "{:.3f}"), ("forget_rougeL_recall", "forget ROUGE-L", "{:.3f}"),
        ("retain_probability", "retain prob. (of target)", "{:.3f}"), ("mia_auc", "MIA AUC", "{:.3f}"),
        ("privleak", "privleak", "{:.1f}"), ("forget_extraction_strength", "forget ES", "{:.3f}"),
        ("relearn25_recovery", "relearn 25 recovery (retain model)", None),
        ("unlearn_seconds", "wall s", "{:.0f}"), ("cost_vs_retrain", "cost / retraining", "{:.3f}"),
        ("eval_seconds", "eval s", "{:.0f}")]


def _cell(row: dict, key: str, fmt: str | None, target: dict | None = None) -> str:
    if key in ("retain_probability", "model_utility") and target and isinstance(row.get(key), (int, float)) \
            and target.get(key):
        return fmt.format(row[key]) + f" ({row[key] / target[key]:.0%})"
    if key == "relearn25_recovery":
        if "relearn25_recovery" not in row:
            return "–"
        base = row.get("relearn25_retain_recovery")
        return f"{row[key]:.3f}" + (f" ({base:.3f})" if isinstance(base, (int, float)) else "")
    v = row.get(key)
    return fmt.format(v) if isinstance(v, (int, float)) else "–"


def tables(res: dict) -> str:
    lines = []
    for split, block in res["splits"].items():
        lines += [f"### {split}", "", "| model | " + " | ".join(c[1] for c in COLS) + " |",
                  "|---" * (len(COLS) + 1) + "|"]
        tgt = block["rows"].get("target")
        for name, row in block["rows"].items():
            lines.append(f"| {name} | " + " | ".join(_cell(row, k, f, tgt) for k, _, f in COLS) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(res: dict, split: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = res["splits"][split]["rows"]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for name, r in rows.items():
        if not isinstance(r.get("forget_quality"), (int, float)) or not isinstance(r.get("model_utility"), (int, float)):
            continue
        y = max(r["forget_quality"], 1e-30)
        marker = "*" if name in ("target", "retain") else "o"
        ax.scatter(r["model_utility"], y, s=90 if marker == "*" else 45, marker=marker)
        ax.annotate(name, (r["model_utility"], y), fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax.axhline(0.05, ls="--", lw=0.8, color="grey")
    ax.set_yscale("log")
    ax.set_xlabel("model utility")
    ax.set_ylabel("forget quality (KS p-value)")
    ax.set_title(f"TOFU {split}, {res['scale']} ({res['machine']['cpu_threads']} CPU threads)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", choices=sorted(SCALES), default="tiny")
    ap.add_argument("--splits", default=None, help="comma-separated (default: the scale's)")
    ap.add_argument("--recipes", default=None, help="comma-separated (default: the scale's)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--robustness", default="forget01", help="splits that get the relearning attack ('none')")
    ap.add_argument("--out", default=None, help="work folder (default benchmarks/out/tofu_SCALE)")
    ap.add_argument("--epochs", type=float, default=None, help="override the target/retain fine-tuning epochs")
    ap.add_argument("--max-steps", type=int, default=None, help="override the recipes' step cap")
    ap.add_argument("--results", default=None, help="results file stem (default tofu_SCALE)")
    ap.add_argument("--lr", action="append", default=[], metavar="RECIPE=LR",
                    help="another learning rate for a recipe; its rows are named 'RECIPE@TARGET lr LR'")
    ap.add_argument("--select-every", type=int, default=None, help="override the selector's measurement interval")
    ap.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="a recipe option for every run (e.g. divergence=hinge); rows are named 'RECIPE KEY=VALUE'")
    ap.add_argument("--shipped", action="store_true",
                    help="every recipe exactly as shipped: no per-scale step cap, batch, budget, selection or learning "
                         "rate (the scale's model, data and fine-tuning only)")
    ap.add_argument("--select-targets", default="recipe", help="checkpoint selection criteria to run, comma-separated: "
                    "recipe (the recipes' own), max (most forgetting within the retain budget), holdout (forget "
                    "perplexity closest to the holdout's) or retrain; rows other than recipe are named RECIPE@TARGET")
    ap.add_argument("--fresh", action="store_true",
                    help="rerun every recipe row, even those in the results file or finished in the work folder by "
                         "the same code (the target and retain models are still reused)")
    args = ap.parse_args()
    bad = [x for x in args.lr + args.option if "=" not in x]
    if bad:
        ap.error(f"--lr and --option take KEY=VALUE, got {bad[0]!r}")
    import torch

    torch.set_num_threads(args.threads)
    from llm_forget import io, zoo

    scale = dict(SCALES[args.scale])
    if args.splits:
        scale["splits"] = args.splits.split(",")
    if args.epochs is not None:
        scale["finetune"] = {**scale["finetune"], "epochs": args.epochs}
    if args.shipped:
        scale["unlearn"], scale["shipped"] = {}, True
    if args.max_steps is not None:
        scale["unlearn"] = {**scale["unlearn"], "max_steps": args.max_steps}
    if args.select_every is not None:
        scale["unlearn"] = {**scale["unlearn"], "select_every": args.select_every}
    lrs = dict(x.split("=", 1) for x in args.lr)
    SCALES[args.scale] = scale
    recipes = args.recipes.split(",") if args.recipes else scale["recipes"]
    work = Path(args.out or ROOT / "benchmarks" / "out" / f"tofu_{args.scale}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = args.results or f"tofu_{args.scale}"
    rfile = RESULTS / f"{stem}.json"
    res = json.loads(rfile.read_text()) if rfile.is_file() else {"scale": args.scale, "splits": {}}
    res["machine"] = {"cpu_cores": os.cpu_count(), "cpu": cpu_model(), "cpu_threads": args.threads, "device": "cpu",
                      "platform": platform.platform(), "torch": torch.__version__}
    res["protocol"] = {**{k: v for k, v in scale.items() if k != "base"}, "recipes": recipes}
    save = lambda: io.write_json(rfile, res)  # noqa: E731

    data = tofu_splits(scale)
    files = {"holdout": work / "data" / "holdout.json", "avoid": work / "data" / "evaluated_retain.json"}
    io.write_json(files["holdout"], data["holdout"])
    # the retain rows the suite reports on, and only those: kept out of the recipes' calibration rows (select_avoid;
    # avoiding every author's rows would make the avoidance void: all groups avoided, the seed picks among them)
    evaluated = data["retain_perturbed"][:scale["eval_rows"]] if "retain_perturbed" in data \
        else _load("retain_perturbed_400")
    io.write_json(files["avoid"], evaluated)
    base = build_tiny_base(work / "models" / "base") if scale["base"] == "tofu-tiny" else zoo.get(scale["base"])
    target = work / "models" / "target"
    tinfo = train(str(base), data["target"], target, scale["finetune"])
    res["target_train"] = tinfo
    print(f"target: {tinfo['rows']} rows, {tinfo['train_seconds']:.0f} s", flush=True)
    for split in scale["splits"]:
        block = res["splits"].setdefault(split, {"rows": {}})
        f = {"forget": work / "data" / f"{split}.json", "retain": work / "data" / f"retain_{split}.json",
             "holdout": files["holdout"], "avoid": files["avoid"]}
        io.write_json(f["forget"], data["forget"][split])
        io.write_json(f["retain"], data["retain"][split])
        suite = suite_for(args.scale, data, work)
        retain = work / "models" / f"retain_{split}"
        rinfo = train(str(base), data["retain"][split], retain, scale["finetune"])
        block["retrain_seconds"] = rinfo["train_seconds"]
        print(f"{split}: retain model {rinfo['rows']} rows, {rinfo['train_seconds']:.0f} s", flush=True)
        ev = work / "eval" / split
        if "retain" not in block["rows"]:
            block["rows"]["retain"] = {**evaluate(str(retain), suite, split, ev / "retain", None),
                                       "train_seconds": rinfo["train_seconds"],
                                       "forget_quality": 1.0}  # KS test of its truth ratios against themselves
            save()
        rres = ev / "retain" / "results.json"
        if "target" not in block["rows"]:
            block["rows"]["target"] = {**evaluate(str(target), suite, split, ev / "target", rres),
                                       "train_seconds": tinfo["train_seconds"]}
            save()
        for name, sel in [(r, t) for t in args.select_targets.split(",") for r in recipes]:
            recipe = name
            if sel != "recipe":
                name = f"{name}@{sel}"
            if recipe in lrs:
                name = f"{name} lr {lrs[recipe]}" + (f" every {args.select_every}" if args.select_every else "")
            if args.option:
                name = " ".join([name, *args.option])
            if name in block["rows"] and not args.fresh:
                print(f"{split} {name}: in {rfile.name} already (measured at {block['rows'][name].get('code', '?')}); "
                      "--fresh reruns it", flush=True)
                continue
            run = work / "runs" / split / name.replace(" ", "_")
            u = unlearn_one(recipe, args.scale, target, split, f, run, sel, lrs.get(recipe),
                            dict(x.split("=", 1) for x in args.option), fresh=args.fresh)
            row = {**evaluate(str(run / "model"), suite, split, ev / name, rres), **u,
                   "cost_vs_retrain": u["unlearn_seconds"] / rinfo["train_seconds"]}
            if split in args.robustness.split(","):
                row.update(robustness(run / "model", target, retain, f))
            block["rows"][name] = row
            print(f"{split} {name}: FQ {row.get('forget_quality'):.3g} MU {row.get('model_utility', float('nan')):.3f} "
                  f"{u['unlearn_seconds']:.0f} s", flush=True)
            save()
        plot(res, split, RESULTS / f"{stem}_{split}.png")
    (RESULTS / f"{stem}.md").write_text(tables(res) + "\n")
    print(tables(res))


if __name__ == "__main__":
    main()
