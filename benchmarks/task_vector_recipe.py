"""The shipped task-vector recipe on the built-in benchmark, by seed, against plain negation.

    .venv/bin/python benchmarks/task_vector_recipe.py [--seeds 0,1,2] [--lambda-refine N] [--out FILE]

For each seed, runs `llm_forget.edit(recipes/task_vector.yaml)` (τ = τ_forget − τ_retain, both
fine-tuned alike) and then plain negation (retain_weight 0) of the same θ_reinf on a λ grid.
Reports, per seed, the chosen λ of the recipe and, for both, the largest forget-perplexity
ratio whose retain-perplexity ratio stays ≤ 1.5 (both ratios to the target model; the aim is
forget ≥ 3x at retain ≤ 1.5x). λ is chosen on the recipe's calibration retain rows (`select_rows` of them, whole
people); "held out" is the chosen model's retain ratio on the other retain rows, which the choice never saw.
Writes benchmarks/results/task_vector_recipe.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("LLM_FORGET_CACHE", str(ROOT / ".cache" / "llm_forget"))  # the zoo models `make test` uses
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def ratios(sweep: dict) -> list[tuple[float, float, float]]:
    b = sweep["target"]
    return [(r["lambda"], r["forget_perplexity"] / b["forget_perplexity"], r["retain_perplexity"] / b["retain_perplexity"])
            for r in sweep["rows"]]


def best(sweep: dict) -> tuple[float, float, float]:
    return max((x for x in ratios(sweep) if x[2] <= 1.5), key=lambda x: x[1])


def main() -> None:
    import llm_forget
    from llm_forget.recipes_index import shipped

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--plain-lambdas", default="0.5,1,1.25,1.5,1.75,2,2.25,2.5")
    ap.add_argument("--lambda-refine", type=int, default=None, help="bisections after the λ grid (default: the "
                    "recipe's; 0 = the grid alone), for both the recipe and plain negation")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "task_vector_recipe.json"))
    a = ap.parse_args()
    recipe = str(shipped()["task_vector"])
    extra = {} if a.lambda_refine is None else {"lambda_refine": a.lambda_refine}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in [int(s) for s in a.seeds.split(",")]:
            t = time.perf_counter()
            run = llm_forget.edit(recipe, output_dir=f"{tmp}/tv{seed}", seed=seed, **extra)
            secs = time.perf_counter() - t
            sw = run.metrics["sweep"]
            chosen = next(x for x in ratios(sw) if x[0] == sw["chosen"]["lambda"])
            held = run.metrics["evaluation"]["ratio_to_target"]
            plain = llm_forget.edit(recipe, output_dir=f"{tmp}/plain{seed}", seed=seed, retain_weight=0.0,
                                    reinforced=f"{tmp}/tv{seed}/reinforced", lambdas=a.plain_lambdas,
                                    **extra).metrics["sweep"]
            held_rows = run.metrics["evaluation"]["retain_rows"]
            rows.append({"seed": seed, "recipe_seconds": round(secs, 1), "chosen": chosen,
                         "held_out": {"retain_rows": held_rows, **held}, "best_recipe": best(sw),
                         "best_plain": best(plain), "recipe_sweep": ratios(sw), "plain_sweep": ratios(plain)})
            print(f"seed {seed}: recipe chosen λ {chosen[0]:g}: forget {chosen[1]:.2f}x retain {chosen[2]:.3f}x "
                  f"(held-out retain {held['retain_perplexity']:.3f}x) "
                  f"({secs:.0f} s); plain negation best at retain ≤ 1.5x: λ {rows[-1]['best_plain'][0]:g}, "
                  f"forget {rows[-1]['best_plain'][1]:.2f}x retain {rows[-1]['best_plain'][2]:.3f}x", flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"rows": rows}, indent=1))
    print(f"written {a.out}")


if __name__ == "__main__":
    main()
