"""Robustness of each shipped unlearning recipe on the built-in benchmark (tiny-target).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_robustness.py [--recipes npo,rmu] [--threads 1]

For every shipped recipe that unlearns tiny-target (llm_forget/recipes/*.yaml with model: tiny-target):
run it as shipped (llm_forget.unlearn, eval_suite none, into benchmarks/out/robustness/RECIPE), then the
shipped robustness suite (llm_forget/suites/robustness.yaml) with tiny-target as the target and
tiny-retain as the baseline. Recovery = (after − before)/(target − before) on the mean forget answer
probability (0 = nothing recovered, 1 = all). Headline: relearning on 10 % of the forget set for 25
steps, measured on the other 90 %, against the retain model's own "recovery" under the same attack.
Results are appended recipe by recipe to benchmarks/results/bench_robustness.json (a partial run
keeps what it finished) and printed as a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("LLM_FORGET_CACHE", str(ROOT / ".cache" / "llm_forget"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
OUT = ROOT / "benchmarks" / "results" / "bench_robustness.json"


def tiny_recipes() -> list[str]:
    import yaml

    names = []
    for p in sorted((ROOT / "llm_forget" / "recipes").glob("*.yaml")):
        cfg = yaml.safe_load(p.read_text())
        if cfg.get("model") == "tiny-target":
            names.append(p.stem)
    return names


def row(name: str, r: dict) -> dict:
    a = r["attacks"]
    rl = a["relearn"]["steps_25"]
    return {
        "recipe": name,
        "forget_probability": r["summary"]["forget_probability"],
        "target_forget_probability": r["summary"]["target_forget_probability"],
        "retain_forget_probability": r["summary"].get("retain_forget_probability"),
        "relearn25_recovery": rl["model"]["recovery"],
        "relearn25_retain_recovery": rl["retain"]["recovery"],
        "relearn25_after": rl["model"]["after"],
        "relearn25_retain_after": rl["retain"]["after"],
        "relearn50_recovery": a["relearn"]["steps_50"]["model"]["recovery"],
        "relearn_retain25_recovery": a["relearn_retain"]["steps_25"]["model"]["recovery"],
        "quantize4_recovery": a["quantize"]["4bit"]["model"]["recovery"],
        "prompt_max_recovery": max(d["model"]["recovery"] for d in a["prompts"].values() if isinstance(d, dict)
                                   and "model" in d),
        "in_context3_recovery": a["in_context"]["shots_3"]["model"]["recovery"],
    }


def table(rows: list[dict]) -> str:
    cols = ["recipe", "forget_probability", "relearn25_recovery", "relearn25_retain_recovery", "relearn25_after",
            "relearn25_retain_after", "relearn50_recovery", "relearn_retain25_recovery", "quantize4_recovery",
            "prompt_max_recovery", "in_context3_recovery", "seconds"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(str(r[c]) if isinstance(r[c], str) else f"{r[c]:.3f}" for c in cols) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipes", default=None, help="comma-separated (default: every tiny-target recipe)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from llm_forget import io, zoo
    from llm_forget.api import unlearn
    from llm_forget.evaluation.robustness import attack, format_table

    names = args.recipes.split(",") if args.recipes else tiny_recipes()
    done = json.loads(OUT.read_text()) if OUT.is_file() else {"rows": [], "full": {}}
    target, retain = str(zoo.get("tiny-target")), str(zoo.get("tiny-retain"))
    for name in names:
        t = time.perf_counter()
        out = ROOT / "benchmarks" / "out" / "robustness" / name
        recipe = str(ROOT / "llm_forget" / "recipes" / f"{name}.yaml")
        if name == "task_vector":  # runs through llm-forget edit (llm_forget/editing/run.py)
            from llm_forget.editing.run import edit

            edit(recipe, output_dir=str(out), overwrite=True)
        else:
            unlearn(recipe, output_dir=str(out), eval_suite="none", overwrite=True)
        t_unlearn = time.perf_counter() - t
        r = attack(str(out / "model"), target, "robustness", retain_model=retain)
        print(f"## {name}\n{format_table(r)}", flush=True)
        x = row(name, r)
        x["seconds"] = time.perf_counter() - t
        x["unlearn_seconds"] = t_unlearn
        done["rows"] = [y for y in done["rows"] if y["recipe"] != name] + [x]
        done["full"][name] = r
        io.write_json(OUT, done)
    print(table(done["rows"]))


if __name__ == "__main__":
    main()
