"""Forgetting TOFU's forget01 authors from their names only (zero-shot), from two rows each (few-shot),
and from all 40 rows, with one recipe; forget quality against the forget01 retain model.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/zero_shot.py [--recipe npo] [--retain-authors 4] [--epochs 40]
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/zero_shot.py --select-target holdout --runs zero-shot,few-shot
    # the full tiny TOFU protocol's target and forget01 retain model (benchmarks/tofu_protocol.py --scale tiny)
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/zero_shot.py --protocol full --recipe kl --select-target recipe \
        --results zero_shot_full_kl
    # SmolLM2-135M: the reduced protocol of benchmarks/tofu_protocol.py --scale smollm2 (its target, retain model)
    .venv/bin/python benchmarks/zero_shot.py --protocol smollm2 --recipe kl --select-target recipe --threads 2 \
        --runs zero-shot-joint,few-shot-joint --results zero_shot_smollm2_kl

Models (benchmarks/tofu_protocol.py's functions, reduced protocol so that the whole benchmark fits in
~15 min of one CPU core): the zoo's tiny Llama with a BPE trained on TOFU's texts, fine-tuned on
forget01 (2 authors) + the first N authors of retain_perturbed_400 (target) and on those N authors
alone (retain model, the reference of forget quality); TOFU's holdout authors are never trained on.
Evaluation: the tofu suite as reduced in tofu_protocol (forget01's 40 rows, 40 retain_perturbed rows,
40 real_authors, 40 world_facts), forget quality against the retain model, model utility against
the target's.

`--protocol full` uses the full tiny protocol of benchmarks/tofu_protocol.py instead (the same target
and forget01 retain model, trained once in benchmarks/out/tofu_tiny and shared with it): target = full
TOFU − holdout (3,960 rows), retain model = that − forget01, retain = the retain model's 3,880 rows,
evaluation = the tofu suite with the holdout's evaluation author, the suite's retain rows kept out of the
recipe's calibration (`select_avoid`), as for the recipes in BENCHMARKS' TOFU sections.

Runs, each from the target with the recipe's shipped settings (retain budget included), retain = the
N authors' rows, holdout = TOFU's holdout authors:
- zero-shot: one described request per author, `{"kind": "concept", "description": NAME}`, applied
  one after the other; the run probes the model (llm_forget/probe.py): neighbours are harvested from
  the retain rows' questions, templates from those questions and the generic list;
- few-shot: the same with `examples` = the author's first 2 forget01 rows;
- zero-shot-joint / few-shot-joint: the same as one request naming both authors (`"description": [A, B]`):
  one run, one retain budget (one request per author spends the budget twice, one run after the other);
- all rows: forget = the 40 forget01 rows (the ordinary recipe).
`--option KEY=VALUE` (repeatable) passes a library option to every run, its rows named with it. A few-shot row also
carries `forget_quality_unseen_rows`: the same KS test on the forget rows whose question was not among the examples
(36 of 40), the rows the run neither trained on nor measured.
Writes benchmarks/results/RESULTS.json (`--results`, default zero_shot; appended as it goes; a rerun skips what is
there).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("LLM_FORGET_CACHE", str(ROOT / ".cache" / "llm_forget"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(ROOT / "benchmarks"))
import tofu_protocol as tp  # noqa: E402
from _common import run_info  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
AUTHORS = ["Basil Mahfouz Al-Kuwaiti", "Nikolai Abilov"]  # forget01's two authors, rows 0-19 and 20-39
KEEP = ("forget_quality", "model_utility", "forget_truth_ratio", "forget_probability", "forget_rougeL_recall",
        "retain_probability", "retain_rougeL_recall", "eval_seconds")


def _write_files(data: dict, work: Path, avoid: list[dict] | None = None) -> dict:
    """forget01's forget rows, its retain rows, the holdout (and the rows calibration must avoid) as JSON files."""
    from llm_forget import io

    rows = {"forget": data["forget"]["forget01"], "retain": data["retain"]["forget01"], "holdout": data["holdout"]}
    if avoid is not None:
        rows["avoid"] = avoid  # the suite's retain rows: never calibrated on
    files = {k: work / "data" / f"{k}.json" for k in rows}
    for k, v in rows.items():
        io.write_json(files[k], v)
    return files


def reduced_protocol(args, work: Path) -> dict:
    """Models, files and suite of the reduced protocol (module docstring)."""
    ft = dict(epochs=args.epochs, learning_rate=1e-3, batch_size=32, max_length=256)
    data = tp.tofu_splits({"splits": ["forget01"], "retain_authors": args.retain_authors})
    base = tp.build_tiny_base(work / "models" / "base")
    target, retain = work / "models" / "target", work / "models" / "retain"
    return {"data": data, "files": _write_files(data, work), "suite": tp.suite_for("smollm2", data, work),
            "target": target, "retain": retain, "protocol": {"retain_authors": args.retain_authors, "finetune": ft},
            "target_train": tp.train(str(base), data["target"], target, ft),
            "retain_train": tp.train(str(base), data["retain"]["forget01"], retain, ft)}


def shared_protocol(scale_name: str, work: Path) -> dict:
    """The target and forget01 retain model of `tofu_protocol.py --scale SCALE` (shared with it, trained there
    once): "tiny" is the full tiny protocol (benchmarks/out/tofu_tiny), "smollm2" the reduced SmolLM2-135M one
    (benchmarks/out/tofu_smollm2: forget01 + 8 retain authors, 4 epochs at 5e-5, 40 rows per suite set)."""
    scale = {**tp.SCALES[scale_name], "splits": ["forget01"]}
    shared = ROOT / "benchmarks" / "out" / f"tofu_{scale_name}"
    data = tp.tofu_splits(scale)
    if scale_name == "tiny":
        base, avoid = str(tp.build_tiny_base(shared / "models" / "base")), tp._load("retain_perturbed_400")
    else:
        from llm_forget.zoo import resolve_model_path

        # the suite reports on the first eval_rows of the 8 authors' retain_perturbed rows: only those are avoided
        base, avoid = resolve_model_path(scale["base"]), data["retain_perturbed"][: scale["eval_rows"]]
    target, retain = shared / "models" / "target", shared / "models" / "retain_forget01"
    return {"data": data, "files": _write_files(data, work, avoid), "suite": tp.suite_for(scale_name, data, work),
            "target": target, "retain": retain, "protocol": {"scale": scale_name, "finetune": scale["finetune"]},
            "target_train": tp.train(base, data["target"], target, scale["finetune"]),
            "retain_train": tp.train(base, data["retain"]["forget01"], retain, scale["finetune"])}


def run_requests(recipe: str, model: str, reqs: list[dict], files: dict, out: Path, extra: dict) -> tuple[str, dict]:
    """Apply described requests one after another; returns the last model and the runs' probe records."""
    from llm_forget import io
    from llm_forget.api import unlearn

    info = {"unlearn_seconds": 0.0, "probes": []}
    for i, req in enumerate(reqs):
        run = out / f"step{i}"
        io.write_json(out / f"request{i}.json", req)
        t = time.perf_counter()
        unlearn(str(ROOT / "llm_forget" / "recipes" / f"{recipe}.yaml"), model=model,
                request=str(out / f"request{i}.json"),
                retain=str(files["retain"]), holdout=str(files["holdout"]), output_dir=str(run), eval_suite="none",
                overwrite=True, **_avoid(files), **extra)
        info["unlearn_seconds"] += time.perf_counter() - t
        res = json.loads((run / "results.json").read_text())
        info["probes"].append({**res["probes"], "steps": res["steps"]})
        model = str(run / "model")
    return model, info


def unseen_forget_quality(model_eval: Path, retain_eval: Path, forget: list[dict], given: set[str]) -> float:
    """Forget quality (KS p-value of truth ratios against the retain model's) on the forget rows whose question
    was not among the request's examples: rows the run neither trained on nor calibrated on."""
    from llm_forget.data.readers import row_hash
    from llm_forget.evaluation.tofu import forget_quality

    keep = [i for i, r in enumerate(forget) if r["question"] not in given]
    items = [json.loads((d / "results.json").read_text())["per_item"]["forget"] for d in (model_eval, retain_eval)]
    assert all([x["id"] for x in it] == [row_hash(r) for r in forget] for it in items), "suite rows out of order"
    return forget_quality(*[[it[i]["truth_ratio"] for i in keep] for it in items])


def _avoid(files: dict) -> dict:
    return {"select_avoid": str(files["avoid"])} if "avoid" in files else {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipe", default="npo")
    ap.add_argument("--retain-authors", type=int, default=4)
    ap.add_argument("--epochs", type=float, default=40)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--protocol", choices=["reduced", "full", "smollm2"], default="reduced",
                    help="reduced: N retain authors (module docstring); full: the tiny TOFU protocol's models")
    ap.add_argument("--select-target", default="max", help="checkpoint selection: max, holdout (forget perplexity "
                    "closest to the holdout's), retrain, or recipe (the recipe's own setting, nothing overridden); "
                    "rows other than max are named NAME@TARGET")
    ap.add_argument("--runs", default="zero-shot,few-shot,all", help="which runs (comma-separated): zero-shot, "
                    "few-shot (one request per author, one after the other), zero-shot-joint, few-shot-joint (one "
                    "request naming both authors), all")
    ap.add_argument("--max-steps", type=int, default=-1, help="cap on each run's steps (-1: the recipe's epochs)")
    ap.add_argument("--probe-templates", type=int, default=None,
                    help="templates asked about each name (default: the library's, 32); rows named '... templates N'")
    ap.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                    help="a library option for every run (repeatable); rows named '... KEY=VALUE'")
    ap.add_argument("--results", default="zero_shot", help="results file stem in benchmarks/results; its own "
                    "work folder under benchmarks/out, so models and rows of different runs never mix")
    args = ap.parse_args()
    bad = [x for x in args.option if "=" not in x]
    if bad:
        ap.error(f"--option takes KEY=VALUE, got {bad[0]!r}")
    import torch

    torch.set_num_threads(args.threads)
    from llm_forget import io
    from llm_forget.api import unlearn

    work = ROOT / "benchmarks" / "out" / args.results
    rfile = RESULTS / f"{args.results}.json"
    res = json.loads(rfile.read_text()) if rfile.is_file() else {"rows": {}}
    scale = {"full": "tiny", "smollm2": "smollm2"}.get(args.protocol)
    setup = shared_protocol(scale, work) if scale else reduced_protocol(args, work)
    data, files, suite, target, retain = (setup[k] for k in ("data", "files", "suite", "target", "retain"))
    res.update(machine={"cpu_cores": os.cpu_count(), "cpu_threads": args.threads, "platform": platform.platform(),
                        "torch": torch.__version__},
               protocol={"name": args.protocol, **setup["protocol"], "recipe": args.recipe,
                         "max_steps": args.max_steps, "select_target": args.select_target, "authors": AUTHORS},
               target_train=setup["target_train"], retain_train=setup["retain_train"])
    save = lambda: (RESULTS.mkdir(parents=True, exist_ok=True), io.write_json(rfile, res))  # noqa: E731
    forget = data["forget"]["forget01"]
    assert all(a in r["question"] + r["answer"] for a, rows in zip(AUTHORS, (forget[:20], forget[20:])) for r in rows)
    ev = work / "eval"
    rows = res["rows"]
    if "retain" not in rows:
        rows["retain"] = {**tp.evaluate(str(retain), suite, "forget01", ev / "retain", None), "forget_quality": 1.0}
        save()
    rres = ev / "retain" / "results.json"
    if "target" not in rows:
        rows["target"] = tp.evaluate(str(target), suite, "forget01", ev / "target", rres)
        save()
    extra = {"max_steps": args.max_steps}
    if args.probe_templates is not None:
        extra["probe_templates"] = args.probe_templates
    if args.select_target != "recipe":
        extra["select_target"] = args.select_target
    extra.update(kv.split("=", 1) for kv in args.option)
    runs = {
        "zero-shot": [{"kind": "concept", "description": a} for a in AUTHORS],
        "few-shot (2 rows each)": [{"kind": "concept", "description": a, "examples": forget[20 * i:20 * i + 2]}
                                   for i, a in enumerate(AUTHORS)],
        "zero-shot-joint (both names, one request)": [{"kind": "concept", "description": AUTHORS}],
        "few-shot-joint (2 rows each, one request)": [{"kind": "concept", "description": AUTHORS,
                                                       "examples": forget[0:2] + forget[20:22]}],
        "all 40 rows": None,
    }
    for name, reqs in runs.items():
        if name.split(" ")[0] not in args.runs.split(","):
            continue
        stem = name.split(" ")[0] + ("" if args.select_target == "max" else f"@{args.select_target}")
        name = name if args.select_target == "max" else f"{name} @{args.select_target}"
        if args.probe_templates is not None and reqs is not None:
            stem, name = f"{stem}_t{args.probe_templates}", f"{name} templates {args.probe_templates}"
        for kv in args.option:
            stem, name = f"{stem}_{kv}", f"{name} {kv}"
        if name in rows:
            continue
        out = work / "runs" / stem
        if reqs is None:
            t = time.perf_counter()
            unlearn(str(ROOT / "llm_forget" / "recipes" / f"{args.recipe}.yaml"), model=str(target),
                    forget=str(files["forget"]), retain=str(files["retain"]), holdout=str(files["holdout"]),
                    output_dir=str(out), eval_suite="none", overwrite=True, **_avoid(files), **extra)
            model, info = str(out / "model"), {"unlearn_seconds": time.perf_counter() - t}
        else:
            model, info = run_requests(args.recipe, str(target), reqs, files, out, extra)
        s = tp.evaluate(model, suite, "forget01", ev / stem, rres)
        given = {r["question"] for q in reqs or [] for r in q.get("examples", [])}
        if given:  # the same KS test on the forget rows no run was given (36 of 40)
            s["forget_quality_unseen_rows"] = unseen_forget_quality(ev / stem, ev / "retain", forget, given)
        rows[name] = {**s, **info, "run": run_info(),
                      "utility_of_target": s["model_utility"] / rows["target"]["model_utility"],
                      "retain_probability_of_target": s["retain_probability"] / rows["target"]["retain_probability"]}
        print(f"{name}: FQ {s['forget_quality']:.3g}, MU {s['model_utility']:.4f} "
              f"({rows[name]['utility_of_target']:.0%} of target), {info['unlearn_seconds']:.0f} s", flush=True)
        save()
    cols = KEEP + ("utility_of_target", "retain_probability_of_target", "mia_auc", "unlearn_seconds")
    print(json.dumps({k: {m: v.get(m) for m in cols} for k, v in rows.items()}, indent=1))


if __name__ == "__main__":
    main()
