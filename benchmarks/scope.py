"""Scope of forgetting on the built-in benchmark: forget people from their direct questions, then ask
their facts paraphrased, reversed and one hop away (llm_forget/data/scope.py), beside their neighbours.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scope.py [--recipes npo,simnpo] [--targets zoo,all-forms]
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scope.py --targets zoo --recipes npo --retain-budget 0.05
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scope.py --targets all-forms,zoo --recipes kl [--reverse-rows true|auto]

Two targets:
- `zoo`: the zoo's tiny-target (trained on the direct questions only, like every recipe's default
  model); tiny-retain is the retrained reference.
- `all-forms`: the zoo's tiny base fine-tuned on every form (direct, paraphrased, reversed, one-hop)
  of the forget and retain people, 40 epochs as tiny-target: a model that knows each fact in every
  form, as a pretrained model knows facts from many texts. Built once under benchmarks/out/scope.

Each recipe (its shipped settings, retain budget included) unlearns the forget people's **direct**
rows only, with the direct rows of the retain people as its retain set. Reported per target and
model: accuracy (all answer tokens are the argmax; evaluation/scope.py) per split and form, and per
form the accuracy relative to the target. Criterion: forget-people accuracy on paraphrased and
reversed questions falls at least as far, relative to the target, as on direct questions (within
0.10), and the neighbours' (retain people's) accuracy stays >= 95 % of the target's.
Writes benchmarks/results/scope.json.
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
RESULTS = ROOT / "benchmarks" / "results"
TRAIN = dict(epochs=40, learning_rate=1e-3, batch_size=32, seed=0)  # = llm_forget.zoo.TINY_FT


def scope_of(model_dir: str, rows) -> dict:
    from llm_forget.evaluation.scope import scope_group
    from llm_forget.models import load_model, load_tokenizer

    return scope_group(load_model(model_dir), load_tokenizer(model_dir), rows=rows)["groups"]


def criterion(model: dict, target: dict, forms=("paraphrased", "reversed")) -> dict:
    """Falls relative to the target (1 - model/target) per form, and whether the criterion holds."""
    def rel(sp, f):
        t = target[sp][f]["accuracy"]
        return model[sp][f]["accuracy"] / t if t else None

    fall = {f: (1 - rel("forget", f) if rel("forget", f) is not None else None) for f in target["forget"]}
    keep = {f: rel("retain", f) for f in target["retain"]}
    scope_ok = all(fall[f] is not None and fall[f] >= fall["direct"] - 0.10 for f in forms)
    return {"forget_fall": fall, "retain_relative": keep, "scope_falls_as_far": scope_ok,
            "neighbours_kept": keep["direct"] is not None and keep["direct"] >= 0.95}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipes", default="npo,simnpo")
    ap.add_argument("--targets", default="zoo", help="zoo and/or all-forms (see the docstring)")
    ap.add_argument("--retain-budget", type=float, default=None,
                    help="override the recipes' retain budget; rows are named RECIPE@budgetB")
    ap.add_argument("--reverse-rows", choices=("false", "true", "auto"), default="false",
                    help="reverse_rows (each row's relation also asked backwards): rows are named RECIPE (false), "
                         "RECIPE+reversed (true) or RECIPE+auto (auto, the shipped default)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    from llm_forget import io, zoo
    from llm_forget.api import unlearn
    from llm_forget.data.scope import scope_rows
    from llm_forget.finetune import finetune

    rows = scope_rows()
    work = ROOT / "benchmarks" / "out" / "scope"
    res = {"machine": {"cpu_cores": os.cpu_count(), "cpu_threads": 1, "platform": platform.platform(),
                       "torch": torch.__version__},
           "counts": {f: sum(r["form"] == f for r in rows) for f in ("direct", "paraphrased", "reversed", "one_hop")},
           "targets": {}}
    old = RESULTS / "scope.json"
    if old.is_file():  # a rerun adds its rows to the file
        res["targets"] = json.loads(old.read_text())["targets"]
    for tname in args.targets.split(","):
        block = res["targets"].setdefault(tname, {"models": {}})
        if tname == "zoo":
            target, retain = str(zoo.get("tiny-target")), str(zoo.get("tiny-retain"))
        else:
            target, retain = work / "all-forms-target", None
            if not (target / "config.json").exists():
                info = finetune(str(zoo.get("tiny")), [r for r in rows if r["split"] != "holdout"], target,
                                progress=False, **TRAIN)
                io.write_json(work / "all-forms-train.json", info)
            block["train_seconds"] = json.loads((work / "all-forms-train.json").read_text())["train_seconds"]
            target = str(target)
        block["models"]["target"] = scope_of(target, rows)
        if retain:
            block["models"]["retain"] = scope_of(retain, rows)
        extra = {} if args.retain_budget is None else {"retain_budget": args.retain_budget}
        extra["reverse_rows"] = args.reverse_rows
        for recipe in args.recipes.split(","):
            name = recipe if args.retain_budget is None else f"{recipe}@budget{args.retain_budget:g}"
            name += {"false": "", "true": "+reversed", "auto": "+auto"}[args.reverse_rows]
            out = work / "runs" / tname / name
            t = time.perf_counter()
            unlearn(str(ROOT / "llm_forget" / "recipes" / f"{recipe}.yaml"), model=target, forget="builtin:forget",
                    retain="builtin:retain", holdout="builtin:holdout", output_dir=str(out), eval_suite="none",
                    overwrite=True, **extra)
            g = scope_of(str(out / "model"), rows)
            run = json.loads((out / "results.json").read_text())
            block["models"][name] = {**g, "unlearn_seconds": time.perf_counter() - t, "reverse_rows": run["reverse_rows"],
                                     "criterion": criterion(g, block["models"]["target"])}
            c = block["models"][name]["criterion"]
            print(f"{tname} {name}: forget fall {c['forget_fall']}, retain kept {c['retain_relative']}", flush=True)
        RESULTS.mkdir(parents=True, exist_ok=True)
        io.write_json(RESULTS / "scope.json", res)
    print(json.dumps({t: {m: {sp: {f: round(g["accuracy"], 3) for f, g in v[sp].items()}
                              for sp in ("forget", "retain")} for m, v in b["models"].items()}
                      for t, b in res["targets"].items()}, indent=1))


if __name__ == "__main__":
    main()
