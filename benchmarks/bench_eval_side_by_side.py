"""`llm-forget eval` of this checkout against an earlier commit, run alternately on the same model.

    .venv/bin/python benchmarks/bench_eval_side_by_side.py BASE_REV [--pairs 4] [--out FILE] [-- EVAL ARGS...]

The earlier commit is checked out in a temporary git worktree and run from there (its own
`llm_forget` package comes first on the path), with this checkout's virtual environment. The
default eval is the tofu.yaml suite on the tofu-tiny target (benchmarks/out/tofu_tiny, built by
benchmarks/tofu_protocol.py), as in BENCHMARKS.md. Each pair runs the base, then this code; both
write into fresh folders. Reports per run: the command's wall time with start-up, the suite's own
`wall_seconds`, teacher-forced and generation seconds, and checks that every summary number
agrees (to 1e-5 relative). Writes JSON (default benchmarks/results/eval_side_by_side.json).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "benchmarks" / "out" / "tofu_tiny"
DEFAULT = ["--model", str(TINY / "models" / "target"), "--suite", "tofu", "--data-dir",
           str(ROOT.parent / "shared" / "data"), "--threads", "2", "--batch-size", "64",
           "--retain-model", str(TINY / "eval" / "forget01" / "retain" / "results.json")]


def one(cwd: Path, args: list[str], out: Path) -> dict:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "llm_forget.cli", "eval", *args, "--output", str(out), "--overwrite"],
                   cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    total = time.perf_counter() - t
    res = json.loads((out / "results.json").read_text())
    g = res["groups"]
    return {"total_s": round(total, 2), "wall_s": res["wall_seconds"],
            "token_s": round(sum(v["seconds"] for k, v in g.items() if k.startswith("token")), 2),
            "generation_s": round(sum(v["seconds"] for k, v in g.items() if k.startswith("generation")), 2),
            "summary": {k: v for k, v in res["summary"].items() if isinstance(v, float)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("base")
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "eval_side_by_side.json"))
    ap.add_argument("eval_args", nargs="*", help="after --: arguments of llm-forget eval (default: tofu-tiny)")
    a = ap.parse_args()
    args = a.eval_args or DEFAULT
    tmp = Path(tempfile.mkdtemp(prefix="eval_sbs."))
    wt = tmp / "base"
    subprocess.run(["git", "worktree", "add", "--detach", "-q", str(wt), a.base], cwd=ROOT, check=True)
    runs: dict[str, list[dict]] = {"base": [], "head": []}
    try:
        for i in range(a.pairs):
            for name, cwd in (("base", wt), ("head", ROOT)):
                r = one(cwd, args, tmp / f"{name}{i}")
                runs[name].append(r)
                print(f"{name} {i}: total {r['total_s']} s, suite {r['wall_s']} s, token {r['token_s']} s, "
                      f"generation {r['generation_s']} s", flush=True)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(wt)], cwd=ROOT, check=False)
    ref = runs["base"][0]["summary"]
    agree = all(abs(r["summary"][k] - v) <= 1e-5 * max(1.0, abs(v)) for rs in runs.values() for r in rs
                for k, v in ref.items())
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    med = {n: {k: statistics.median(r[k] for r in rs) for k in ("total_s", "wall_s", "token_s", "generation_s")}
           for n, rs in runs.items()}
    out = {"base": a.base, "head": head, "eval_args": args, "pairs": a.pairs, "summaries_agree": agree,
           "median": med, "runs": {n: [{k: v for k, v in r.items() if k != "summary"} for r in rs]
                                   for n, rs in runs.items()}}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    print("\n| code | command (with start-up) | suite wall | teacher-forced | generation |\n|---|---|---|---|---|")
    for n, label in (("base", a.base), ("head", head)):
        m = med[n]
        print(f"| {label} | {m['total_s']:.2f} s | {m['wall_s']:.2f} s | {m['token_s']:.2f} s | {m['generation_s']:.2f} s |")
    print(f"\nmedians of {a.pairs} alternating runs; summaries agree: {agree}; written {a.out}")


if __name__ == "__main__":
    main()
