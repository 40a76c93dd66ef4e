"""Evaluation speed: the single-pass scorer vs one forward pass per metric, and the tofu suite.

    .venv/bin/python benchmarks/bench_eval.py [--smol-rows 6] [--tofu-smol-limit 8] [--threads 1] [--skip-smol]

1. Token metrics (probability/perplexity, exact memorization, extraction strength, LOSS, zlib,
   Min-K% 20/40, Min-K%++ 20/40, truth ratio, normalised probability) on the same model and data:
   a) one forward pass per metric (fixed batches, full logits: how the reference suites do it;
      11 passes: 9 over the answers, truth ratio over correct + perturbed answers, normalised
      probability over answers + perturbed answers),
   b) one pass for all metrics, same batching and full logits (the design alone),
   c) llm_forget's `score_sequences` (one pass, length-sorted batches, logits only at answer positions,
      each prompt run once for all its answers).
   Median of 3 runs each; examples/s counts answer rows (each with its paraphrase/perturbed variants).
2. The tofu.yaml suite (forget01 layout, ../shared/data/tofu): full with the tiny model; for
   SmolLM2-135M a sample (first N rows of every dataset) scaled per metric group to the full row
   counts (each group's time x full rows / sample rows).
Writes benchmarks/results/bench_eval.json and prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
TOFU = ROOT.parent / "shared" / "data" / "tofu"
os.environ.setdefault("LLM_FORGET_DATA_DIR", str(TOFU.parent))  # the local mirror of locuslab/TOFU
os.environ.setdefault("LLM_FORGET_CACHE", str(ROOT / ".cache" / "llm_forget"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def sequences(tok, rows, correct="paraphrased_answer"):
    """answers (full metrics), then paraphrases + perturbed answers (nll only)."""
    from llm_forget.data.encode import Encoder

    enc = Encoder(tok, max_length=512)
    ans = [enc.row(r) for r in rows]
    para = [enc.row(r, "paraphrased_answer") for r in rows
            if correct == "paraphrased_answer" and r.get("paraphrased_answer")]
    pert = [enc.qa(r["question"], p) for r in rows for p in r["perturbed_answer"]]
    return ans, para + pert, {"paraphrased": len(para)}


@torch.no_grad()
def _passes(model, seqs, pad_id, bs):
    from llm_forget.data.encode import pad

    for s in range(0, len(seqs), bs):
        b = pad(seqs[s:s + bs], pad_id)
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        yield logits[:, :-1].float(), b["labels"][:, 1:]


def _rows(logits, labels):
    for i in range(labels.shape[0]):
        m = labels[i] != -100
        yield logits[i][m], labels[i][m]


def per_metric(model, ans, var, pad_id, bs, n_var):
    """One full forward pass per reported metric, fixed batches (how the reference suites compute
    them): probability, exact memorization, extraction strength, LOSS, zlib, Min-K% 20/40,
    Min-K%++ 20/40 on the answers; truth ratio on the correct + perturbed answers; normalised
    probability on the answers + perturbed answers."""
    from llm_forget.evaluation.scoring import extraction_strength, min_k, vocab_moments

    def logp_of(lg, y):
        return torch.log_softmax(lg, -1).gather(1, y[:, None]).squeeze(1)

    def zpp(lg, y, k):
        mu, sd = vocab_moments(lg)
        return min_k((logp_of(lg, y) - mu) / sd, k)

    answer_metrics = {
        "probability": lambda lg, y: float(logp_of(lg, y).mean().neg().exp()),
        "exact_memorization": lambda lg, y: float((lg.argmax(-1) == y).float().mean()),
        "extraction_strength": lambda lg, y: extraction_strength(lg.argmax(-1) == y),
        "loss": lambda lg, y: float(logp_of(lg, y).mean()),
        "zlib": lambda lg, y: float(logp_of(lg, y).mean()),
        "mink_20": lambda lg, y: min_k(logp_of(lg, y), 20),
        "mink_40": lambda lg, y: min_k(logp_of(lg, y), 40),
        "minkpp_20": lambda lg, y: zpp(lg, y, 20),
        "minkpp_40": lambda lg, y: zpp(lg, y, 40),
    }
    nll = lambda lg, y: float(-logp_of(lg, y).mean())  # noqa: E731
    out = {}
    for name, fn in answer_metrics.items():
        out[name] = [fn(lg, y) for logits, labels in _passes(model, ans, pad_id, bs) for lg, y in _rows(logits, labels)]
    # truth ratio: correct (paraphrase, or the answer when there is none) + perturbed; normalised
    # probability: answer + perturbed. `var` holds the paraphrases (if any) then perturbed answers.
    tr_seqs = var if n_var["paraphrased"] else ans + var
    out["truth_ratio"] = [nll(lg, y) for logits, labels in _passes(model, tr_seqs, pad_id, bs)
                          for lg, y in _rows(logits, labels)]
    pert = var[n_var["paraphrased"]:]
    out["normalised_probability"] = [nll(lg, y) for logits, labels in _passes(model, ans + pert, pad_id, bs)
                                     for lg, y in _rows(logits, labels)]
    return out


def one_pass_plain(model, ans, var, pad_id, bs, n_var=None):
    from llm_forget.evaluation.scoring import row_metrics

    seqs, full = ans + var, [True] * len(ans) + [False] * len(var)
    out, i = [], 0
    for logits, labels in _passes(model, seqs, pad_id, bs):
        for lg, y in _rows(logits, labels):
            out.append(row_metrics(lg, y, full=full[i]))
            i += 1
    return out


def ours(model, ans, var, pad_id, bs, n_var=None):
    from llm_forget.evaluation.scoring import score_sequences

    return score_sequences(model, ans + var, pad_id, bs, full=[True] * len(ans) + [False] * len(var))


def timed(fn, reps=3):
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), ts


def bench_token(name, path, rows, bs, reps, correct):
    from llm_forget.models import load_model, load_tokenizer

    model, tok = load_model(path), load_tokenizer(path)
    ans, var, n_var = sequences(tok, rows, correct)
    n_tok = sum(len(s["input_ids"]) for s in ans + var)
    res = {"model": name, "rows": len(rows), "sequences": len(ans) + len(var), "tokens": n_tok, "batch_size": bs}
    # the three must agree on the numbers
    a = one_pass_plain(model, ans, var, tok.pad_token_id, bs)
    b = ours(model, ans, var, tok.pad_token_id, bs)
    res["max_abs_diff_nll"] = max(abs(x["nll"] - y["nll"]) for x, y in zip(a, b))
    for key, fn in (("per_metric", per_metric), ("one_pass_plain", one_pass_plain), ("single_pass", ours)):
        med, ts = timed(lambda fn=fn: fn(model, ans, var, tok.pad_token_id, bs, n_var), reps)
        res[key] = {"median_s": med, "runs_s": ts, "examples_per_s": len(rows) / med}
        print(f"  {name} {key}: {med:.2f}s (runs {', '.join(f'{t:.2f}' for t in ts)})", flush=True)
    res["speedup_vs_per_metric"] = res["per_metric"]["median_s"] / res["single_pass"]["median_s"]
    res["speedup_design_only"] = res["per_metric"]["median_s"] / res["one_pass_plain"]["median_s"]
    return res


def bench_tofu(name, path, limit, bs):
    from llm_forget.evaluation.suite import evaluate, load_suite, resolve_datasets

    full_rows = {k: len(v) for k, v in resolve_datasets(load_suite("tofu"), {"data_dir": str(TOFU),
                                                                             "forget_split": "forget01"}).items()}
    t = time.perf_counter()
    res = evaluate(path, "tofu", data_dir=TOFU, limit=limit, batch_size=bs, progress=False)
    wall = time.perf_counter() - t
    est = 0.0
    groups = {}
    for g, v in res["groups"].items():
        ds = g.split(":", 1)[1] if ":" in g else None
        # batches in the full run / batches in the sample (decoding cost is per batch step on CPU)
        n = res["summary"].get(f"{ds}_n") if ds else None
        scale = math.ceil(full_rows[ds] / bs) / math.ceil(n / bs) if n else 1.0
        groups[g] = {"seconds": v["seconds"], "scale": scale}
        est += v["seconds"] * scale
    overhead = wall - sum(v["seconds"] for v in res["groups"].values())  # loading, hashing
    est += overhead
    keys = ("model_utility", "mia_auc", "forget_truth_ratio", "retain_truth_ratio", "forget_rougeL_recall",
            "retain_rougeL_recall", "forget_probability")
    return {"model": name, "limit": limit, "full_rows": full_rows, "wall_s": wall, "groups": groups,
            "overhead_s": overhead, "estimated_full_s": est,
            "summary": {k: res["summary"].get(k) for k in keys}}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--smol-rows", type=int, default=4, help="TOFU forget01 rows for the SmolLM2 token benchmark")
    ap.add_argument("--tofu-smol-limit", type=int, default=32, help="rows per dataset for the SmolLM2 tofu sample")
    ap.add_argument("--skip-smol", action="store_true")
    ap.add_argument("--smol-batch", type=int, default=32, help="batch size of the SmolLM2 tofu sample")
    ap.add_argument("--only-tofu-smol", action="store_true", help="rerun only the SmolLM2 tofu sample, "
                    "replacing it in an existing --out file")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_eval.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from llm_forget import zoo
    from llm_forget.data.readers import read_rows

    env = {"threads": args.threads, "loadavg_start": os.getloadavg(), "cpu_count": os.cpu_count(),
           "torch": torch.__version__}
    if args.only_tofu_smol:
        out = json.loads(Path(args.out).read_text())
        out["tofu"] = [t for t in out["tofu"] if t["model"] != "smollm2-135m"]
        r = bench_tofu("smollm2-135m", str(zoo.get("smollm2-135m")), args.tofu_smol_limit, args.smol_batch)
        r["loadavg"] = [env["loadavg_start"], os.getloadavg()]
        out["tofu"].append(r)
        Path(args.out).write_text(json.dumps(out, indent=2))
        print(f"smollm2 tofu sample ({args.tofu_smol_limit} rows/dataset, batch {args.smol_batch}): "
              f"{r['wall_s']:.1f}s -> est {r['estimated_full_s']:.0f}s; load {r['loadavg']}")
        return
    out = {"environment": env, "token": [], "tofu": []}
    rows = read_rows("builtin:all")
    out["token"].append(bench_token("tiny-target", str(zoo.get("tiny-target")), rows, 32, args.reps, "answer"))
    if not args.skip_smol and TOFU.exists():
        smol_rows = read_rows(str(TOFU / "forget01.json"))[: args.smol_rows]
        out["token"].append(bench_token("smollm2-135m", str(zoo.get("smollm2-135m")), smol_rows, 8, args.reps,
                                        "paraphrased_answer"))
    if TOFU.exists():
        out["tofu"].append(bench_tofu("tiny (untrained)", str(zoo.get("tiny")), None, 32))
        print(f"  tofu tiny: {out['tofu'][-1]['wall_s']:.1f}s", flush=True)
        if not args.skip_smol:
            out["tofu"].append(bench_tofu("smollm2-135m", str(zoo.get("smollm2-135m")), args.tofu_smol_limit,
                                          args.smol_batch))
            print(f"  tofu smollm2 sample: {out['tofu'][-1]['wall_s']:.1f}s -> est "
                  f"{out['tofu'][-1]['estimated_full_s']:.0f}s", flush=True)
    env["loadavg_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print("\n| model | rows (seqs, tokens) | one pass per metric | one pass, plain | llm_forget single pass | "
          "speed-up | ex/s (single pass) |\n|---|---|---|---|---|---|---|")
    for r in out["token"]:
        print(f"| {r['model']} | {r['rows']} ({r['sequences']}, {r['tokens']}) | {r['per_metric']['median_s']:.2f}s | "
              f"{r['one_pass_plain']['median_s']:.2f}s | {r['single_pass']['median_s']:.2f}s | "
              f"{r['speedup_vs_per_metric']:.1f}x | {r['single_pass']['examples_per_s']:.1f} |")
    print("\n| model | rows used | measured | full forget01 suite (est.) |\n|---|---|---|---|")
    for r in out["tofu"]:
        print(f"| {r['model']} | {r['limit'] or 'all'} | {r['wall_s']:.1f}s | {r['estimated_full_s']:.0f}s |")
    print(f"\nthreads {args.threads}, load average {env['loadavg_start']} -> {env['loadavg_end']}")


if __name__ == "__main__":
    main()
