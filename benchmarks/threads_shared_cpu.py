"""`llm-forget unlearn npo` on the tiny model with and without another process keeping one core busy.

Policies: `--threads N` (N = every CPU: torch's own default, what the CLI did before the thread
policy) and the default (llm_forget/threads.py: the CPUs other processes leave free). Each run is a
fresh `python -m llm_forget` process without OMP_NUM_THREADS; the busy core is a
`python -c "while True: pass"` started before the run and stopped after it. Runs alternate
(policy x load, `--reps` rounds) so that other work on the machine hits every cell alike;
before each run the busy CPUs (excluding ours) are sampled from /proc/stat.

    python benchmarks/threads_shared_cpu.py [--reps 3] [--extra "--max_steps 20"] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _child_cpu() -> float:
    """User + system CPU seconds of finished child processes (the run's own work, whatever its share)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def one_run(policy: str, busy: bool, work: Path, timeout: float, extra: list[str]) -> dict:
    from llm_forget.threads import busy_cpus

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["PYTHONPATH"] = str(ROOT)
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        time.sleep(0.5)
        n, load = busy_cpus(0.5)
        out = work / f"{policy}-{int(busy)}"
        argv = [sys.executable, "-m", "llm_forget", "--quiet", "unlearn", "npo", "--output_dir", str(out),
                "--overwrite", "--disable_tqdm", "true", *extra]
        if policy != "default":
            argv += ["--threads", policy]
        t, cpu = time.perf_counter(), _child_cpu()
        try:
            subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, timeout=timeout)
        except subprocess.TimeoutExpired:  # recorded as the limit: the true time is longer
            return {"policy": policy, "busy_core": busy, "busy_cpus_before": round(load, 2), "cpus": n,
                    "wall_s": timeout, "total_s": timeout, "timed_out": True}
        wall, cpu = time.perf_counter() - t, _child_cpu() - cpu
    finally:
        if spinner:
            spinner.kill()
            spinner.wait()
    res = json.loads((out / "results.json").read_text())
    return {"policy": policy, "busy_core": busy, "busy_cpus_before": round(load, 2), "cpus": n, "wall_s": wall,
            "cpu_s": cpu,
            "train_s": res["timings"]["train_seconds"], "total_s": res["timings"]["total_seconds"],
            "steps": res["steps"], "forget_perplexity": res["summary"]["forget_perplexity"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=240, help="seconds before a run is stopped (reported as this)")
    ap.add_argument("--policies", default=f"default,{len(os.sched_getaffinity(0))}")
    ap.add_argument("--extra", default="--max_steps 20",
                    help="more unlearn options (default: 20 of the recipe's steps)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "threads_shared_cpu.json"))
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    runs = []
    with tempfile.TemporaryDirectory(prefix="llm_forget_threads.") as d:
        for _ in range(args.reps):
            for policy in args.policies.split(","):
                for busy in (False, True):
                    runs.append(one_run(policy, busy, Path(d), args.timeout, args.extra.split()))
                    print(json.dumps(runs[-1]), flush=True)
    cells = {}
    for r in runs:
        cells.setdefault(f"{r['policy']} {'busy' if r['busy_core'] else 'idle'}", []).append(r["total_s"])
    med = {k: statistics.median(v) for k, v in cells.items()}
    ratios = {p: med[f"{p} busy"] / med[f"{p} idle"] for p in args.policies.split(",")}
    cpu = {}
    for r in runs:
        if "cpu_s" in r:
            cpu.setdefault(f"{r['policy']} {'busy' if r['busy_core'] else 'idle'}", []).append(r["cpu_s"])
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    summary = {"command": "llm-forget unlearn npo " + args.extra, "median_total_s": med, "median_cpu_s": med_cpu,
               "busy_over_idle": ratios, "runs": runs,
               "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                        text=True).stdout.strip(), "loadavg_end": os.getloadavg()}
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({"median_total_s": med, "median_cpu_s": med_cpu, "busy_over_idle": ratios}, indent=2))


if __name__ == "__main__":
    main()
