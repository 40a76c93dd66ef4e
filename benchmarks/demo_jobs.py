"""`llm-forget demo` (tiny model, every recipe, zoo models cached): recipes one after another with every
CPU's thread (what the demo did by default on an idle CPU before `--jobs`) against the recipes side by side
in one process per CPU with one thread each (the default now), in the same run, alternating.

    python benchmarks/demo_jobs.py [--reps 1] [--out benchmarks/results/demo_jobs.json]

Each run is a fresh `python -m llm_forget demo` process without OMP_NUM_THREADS. The two variants run
with different thread counts, so their numbers differ in the last digits (as any 1- and 2-thread runs do;
that side-by-side processes reproduce the same thread count's numbers exactly is a test,
tests/test_demo.py); the file records each variant's best recipe and forget qualities. Run it on an
idle machine: the busy CPUs sampled before each run are recorded beside its time.
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
from _common import ROOT, run_info, timings  # noqa: E402

VARIANTS = {"sequential, 1 job x all CPUs' threads (before)": lambda n: ["--jobs", "1", "--threads", str(n)],
            "side by side, 1 job per CPU x 1 thread (default)": lambda n: []}


def outcome(summary: dict) -> dict:
    """The demo's verdict and every model's forget quality and utility / target."""
    from llm_forget.demo import best_recipe

    best, fq = best_recipe(summary)
    return {"best": best, "best_forget_quality": fq,
            "forget_quality": {m: r["forget_quality"] for m, r in summary.items()},
            "utility_vs_target": {m: round(r["utility_vs_target"], 4) for m, r in summary.items()}}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "demo_jobs.json"))
    a = ap.parse_args(argv)
    from llm_forget.threads import busy_cpus

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["PYTHONPATH"] = str(ROOT)
    n = len(os.sched_getaffinity(0))
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    seen, busy, tables = {}, {v: [] for v in VARIANTS}, {}
    k = 0
    with tempfile.TemporaryDirectory() as work:
        for rep in range(a.reps):
            for name, extra in VARIANTS.items():
                busy[name].append(round(busy_cpus(0.5)[1], 2))
                out, k = Path(work) / f"run{k}", k + 1
                argv = [sys.executable, "-m", "llm_forget", "--quiet", "demo", "--output", str(out), *extra(n)]
                t = time.perf_counter()
                subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
                times[name].append(time.perf_counter() - t)
                summary = json.loads((out / "summary.json").read_text())
                seen[name] = outcome(summary)
                tables[name] = {m: round(r["wall_seconds"], 1) for m, r in summary.items()}
                print(f"{name}: {times[name][-1]:.0f} s", flush=True)
    variants = list(VARIANTS)
    t = timings(times)
    res = {**run_info(), "cpus": n, **t, "busy_cpus_before": busy,
           "ratio_before_over_default": round(t["median_seconds"][variants[0]] / t["median_seconds"][variants[1]], 2),
           "outcome": seen, "recipe_wall_seconds": tables}
    Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
