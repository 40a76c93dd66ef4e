"""`llm-forget demo` on several zoo builds: the demo's bar (the best recipe reaches forget quality >= 0.1 at >= 95 % of
the target's utility, in under 5 minutes on 2 cores) asked of each build, not of one.

    python benchmarks/demo_builds.py --seeds 0,1,2,3 [--cache-root DIR] [--results NAME]

Build S is the zoo's tiny-target / tiny-retain from `LLM_FORGET_SEED=S` in the cache `DIR/zoo_sS` (built there by the
demo when missing, which its wall time then includes; reuse a cache to time the demo alone). Each demo is a fresh
`python -m llm_forget demo` process with its default jobs and threads. Results: benchmarks/results/NAME.json
(default demo_builds), one entry per build: the best recipe and its forget quality and utility (of the target's),
every recipe's forget quality, NLL KS p, MIA AUC and utility, the retain model's MIA AUC, the zero-shot row, the wall
time and the CPU load sampled before the run; with run_info (CPU model, commit).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, run_info, save_per_model  # noqa: E402

KEEP = ("forget_quality", "forget_nll_quality", "mia_auc", "utility_vs_target", "forget_perplexity")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="0,1,2,3", help="comma-separated zoo seeds")
    ap.add_argument("--cache-root", default=str(Path(tempfile.gettempdir()) / "llm_forget_builds"),
                    help="the zoo cache of build S is CACHE_ROOT/zoo_sS")
    ap.add_argument("--results", default="demo_builds", help="results file stem in benchmarks/results")
    args = ap.parse_args()
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        ap.error(f"--seeds takes comma-separated integers, not {args.seeds!r}")
    from llm_forget.demo import best_recipe

    for s in seeds:
        env = {**os.environ, "LLM_FORGET_CACHE": str(Path(args.cache_root) / f"zoo_s{s}"), "LLM_FORGET_SEED": str(s),
               "HF_HUB_OFFLINE": "1"}
        env.pop("OMP_NUM_THREADS", None)
        load = os.getloadavg()[0]
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "llm_forget", "demo", "--output", f"{d}/demo"], env=env, check=True,
                           cwd=ROOT, stdout=subprocess.DEVNULL)
            wall = time.perf_counter() - t0
            summary = json.loads(Path(f"{d}/demo/summary.json").read_text())
            zs_file = Path(f"{d}/demo/zero_shot.json")
            zero_shot = json.loads(zs_file.read_text()) if zs_file.exists() else None
        best, fq = best_recipe(summary)
        res = {"run": run_info(), "load_before": round(load, 2), "wall_seconds": round(wall, 1), "best": best,
               "best_forget_quality": fq,
               "best_utility_of_target": summary[best]["utility_vs_target"] if best else None,
               "bar_met": bool(best) and fq >= 0.1 and wall < 300,
               "models": {n: {k: m.get(k) for k in KEEP} for n, m in summary.items()}, "zero_shot": zero_shot}
        save_per_model(args.results, f"seed{s}", res)
        kept = f"{best} forget quality {fq:.3g} at {res['best_utility_of_target']:.1%}" if best else \
            "none (no recipe kept 95 % of the target's utility)"
        print(f"seed {s}: best {kept}, {wall:.0f} s", flush=True)


if __name__ == "__main__":
    main()
