"""How far exact retraining is from the retain model on the bars' own measures: the noise floor of forget quality.

Forget quality is a KS test's p-value: the forget rows' truth ratios under the model measured against those under
*one* retain model (trained without the forget rows). A second retraining, the same data and recipe with another
random draw, is exact unlearning by definition; what it scores against the reference retain model is what any
method that matches retraining can expect. This script trains such retrainings and scores them as the bars do.

    # built-in benchmark, the demo's evaluation (the zoo build of $LLM_FORGET_SEED is the reference)
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/retrain_noise.py builtin --draws 4
    # TOFU forget01 on the tiny Llama, benchmarks/tofu_protocol.py's protocol and suite
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/retrain_noise.py tofu --draws 3
    # the same on SmolLM2-135M-Instruct, tofu_protocol.py's reduced protocol (one process of 2 threads)
    .venv/bin/python benchmarks/retrain_noise.py tofu-smollm2 --draws 2 --jobs 1

Draws, for draw k = 1..N:
- builtin: `order` fine-tunes the reference's own random initialisation on the retain people with another
  fine-tuning seed (another data order: what a user retraining their model sees); `init` also starts from
  another random initialisation of the tiny Llama (the draw a from-scratch model gets on retraining). Both
  with the zoo's fine-tuning settings (zoo.TINY_FT). Scored by the demo's evaluation (`llm_forget.demo`: the
  rows no recipe calibrates on, truth ratios against the zoo's tiny-retain).
- tofu: the forget01 retain model of `tofu_protocol.py --scale tiny` (full TOFU - forget01 - holdout, 8 epochs)
  with fine-tuning seed k (the reference is seed 0, the protocol's own model, shared with it), scored by the
  same suite against the reference; tofu-smollm2: the same with `--scale smollm2` (SmolLM2-135M-Instruct
  fine-tuned on 8 retain authors, the reduced suite).

Runs go two at a time in spawned processes of one thread (`--jobs`). Results: benchmarks/results/retrain_noise.json
(one entry per benchmark and reference build; rerunning skips the draws already there).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("LLM_FORGET_CACHE", str(ROOT / ".cache" / "llm_forget"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(ROOT / "benchmarks"))
from _common import run_info

RESULTS = ROOT / "benchmarks" / "results" / "retrain_noise.json"
KEEP = ("forget_quality", "model_utility", "forget_perplexity", "forget_truth_ratio", "mia_auc",
        "retain_probability", "forget_probability")
OFFSET = 1000  # draw k's seeds are the reference's + OFFSET * k: never a zoo build's own seed


def _train_builtin(kind: str, k: int, out: str) -> dict:
    """Draw k of `kind` (`order` or `init`) of the zoo's tiny-retain, fine-tuned into `out` (kept if there)."""
    from llm_forget import zoo
    from llm_forget.data.readers import read_rows
    from llm_forget.sft import train

    if (Path(out) / "config.json").exists():
        return {"output_dir": out, "train_seconds": None}
    s = zoo.seed() + OFFSET * k
    base = zoo.get("tiny", seed=s) if kind == "init" else zoo.get("tiny")
    return train(str(base), read_rows("builtin:retain"), out, progress=False, name=f"retain draw {kind} {k}",
                 **{**zoo.TINY_FT, "seed": s})


def _tofu_base(scale_name: str, work: Path) -> Path:
    import tofu_protocol as tp

    from llm_forget import zoo

    return tp.build_tiny_base(work / "models" / "base") if scale_name == "tiny" else zoo.get("smollm2-135m")


def _train_tofu(scale_name: str, k: int, out: str) -> dict:
    import tofu_protocol as tp

    scale = tp.SCALES[scale_name]
    data = tp.tofu_splits({**scale, "splits": ["forget01"]})
    base = _tofu_base(scale_name, Path(out).parents[1])
    return tp.train(str(base), data["retain"]["forget01"], Path(out), {**scale["finetune"], "seed": k})


def builtin(draws: int, jobs: int) -> tuple[str, dict]:
    from llm_forget import zoo
    from llm_forget.demo import _evaluate, evaluation_setup
    from llm_forget.jobs import run_jobs

    target, retain = (str(p) for p in zoo.get_side_by_side(("tiny-target", "tiny-retain"), jobs=jobs))
    work = Path(zoo.cache_dir()) / "retrain_noise" / f"builtin-seed{zoo.seed()}"
    plan = [(kind, k, str(work / f"{kind}{k}")) for k in range(1, draws + 1) for kind in ("order", "init")]
    zoo.get("tiny")
    t = time.perf_counter()
    trained = run_jobs([(_train_builtin, *p) for p in plan], jobs, 1)
    print(f"{len(plan)} retrainings in {time.perf_counter() - t:.0f} s", flush=True)
    _, _, sets, encoder, tr, ref = evaluation_setup(target, retain)
    models = {"target": target, "retain": retain, **{f"{kind} {k}": p for kind, k, p in plan}}
    out = {name: {m: _evaluate(path, encoder, sets, ref, tr)[m] for m in KEEP} for name, path in models.items()}
    for (kind, k, _), info in zip(plan, trained):
        out[f"{kind} {k}"]["train_seconds"] = info["train_seconds"]
    return f"builtin-seed{zoo.seed()}", {"rows": out, "forget_rows": len(sets["forget"])}


def tofu(draws: int, jobs: int, scale_name: str = "tiny") -> tuple[str, dict]:
    import tofu_protocol as tp

    from llm_forget.jobs import run_jobs

    work = ROOT / "benchmarks" / "out" / f"tofu_{scale_name}"
    models = {k: work / "models" / ("retain_forget01" if k == 0 else f"retain_forget01_seed{k}")
              for k in range(draws + 1)}
    _tofu_base(scale_name, work)
    t = time.perf_counter()
    trained = run_jobs([(_train_tofu, scale_name, k, str(p)) for k, p in models.items()], jobs, 1 if jobs > 1 else 2)
    print(f"{len(models)} TOFU retain models in {time.perf_counter() - t:.0f} s", flush=True)
    data = tp.tofu_splits({**tp.SCALES[scale_name], "splits": ["forget01"]})
    suite = tp.suite_for(scale_name, data, work)
    ev = work / "eval" / "forget01"
    rows = {"retain": {**tp.evaluate(str(models[0]), suite, "forget01", ev / "retain", None), "forget_quality": 1.0}}
    for k, p in list(models.items())[1:]:
        rows[f"seed {k}"] = tp.evaluate(str(p), suite, "forget01", ev / f"retain_seed{k}",
                                        ev / "retain" / "results.json")
    out = {n: {m: r.get(m) for m in KEEP} for n, r in rows.items()}
    for (n, _), info in zip(out.items(), trained):
        out[n]["train_seconds"] = info["train_seconds"]
    return f"tofu-{scale_name}-forget01", {"rows": out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("benchmark", choices=("builtin", "tofu", "tofu-smollm2"))
    ap.add_argument("--draws", type=int, default=4, help="retrainings per kind (default 4)")
    ap.add_argument("--jobs", type=int, default=2, help="retrainings side by side, one thread each (default 2)")
    args = ap.parse_args()
    if args.benchmark == "builtin":
        key, res = builtin(args.draws, args.jobs)
    else:
        key, res = tofu(args.draws, args.jobs, "tiny" if args.benchmark == "tofu" else "smollm2")
    res["run"] = run_info()
    draws = {n: r for n, r in res["rows"].items() if n not in ("target", "retain")}
    fq = sorted(r["forget_quality"] for r in draws.values())
    res["forget_quality_of_retraining"] = {"min": fq[0], "median": fq[len(fq) // 2], "max": fq[-1],
                                           "share_at_least_0.1": sum(x >= 0.1 for x in fq) / len(fq),
                                           "share_at_least_0.05": sum(x >= 0.05 for x in fq) / len(fq)}
    old = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    old[key] = res
    RESULTS.write_text(json.dumps(old, indent=1) + "\n")
    print("| model | " + " | ".join(KEEP) + " |\n|---|" + "---|" * len(KEEP))
    for n, r in res["rows"].items():
        print(f"| {n} | " + " | ".join("–" if r.get(m) is None else f"{r[m]:.3g}" for m in KEEP) + " |")
    print(json.dumps(res["forget_quality_of_retraining"]))


if __name__ == "__main__":
    main()
