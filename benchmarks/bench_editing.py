"""Model editing on SmolLM2-135M with CounterFact requests: MEMIT (batch), ROME (sequential),
AlphaEdit (sequential), LoRA editing. Prints a table and writes JSON.

    .venv/bin/python benchmarks/bench_editing.py --methods memit --n 100 --out runs/bench_editing

CounterFact probability family (efficacy, paraphrase, neighbourhood scores, before and after),
wall time of statistics and of editing on this machine. The key statistics C use --n_tokens
WikiText-2 validation tokens (cached under the zoo cache dir, stats/).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", default="memit", help="comma list of memit, rome, alphaedit, lora_edit")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--requests", default=str(DATA / "editing" / "counterfact-edit-1k.json"))
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--layers", default="4-8")
    ap.add_argument("--rome_layer", default="4")
    ap.add_argument("--n_tokens", type=int, default=10000)
    ap.add_argument("--v_steps", type=int, default=25)
    ap.add_argument("--n_value_prefixes", type=int, default=5)
    ap.add_argument("--n_key_prefixes", type=int, default=20)
    ap.add_argument("--seq_batch", type=int, default=10, help="sequential methods: requests per step")
    ap.add_argument("--mom2_weight", type=float, default=15000.0, help="MEMIT λ")
    ap.add_argument("--lambdas", default=None,
                    help="MEMIT only: comma list of λ, one run each from the unedited weights; the targets z "
                         "are computed by the first and read from the targets cache by the others (a cheap sweep)")
    ap.add_argument("--clamp_norm", type=float, default=None, help="v* clamp (default per method)")
    ap.add_argument("--v_batch", type=int, default=32, help="MEMIT/AlphaEdit: requests per batched v* solve")
    ap.add_argument("--compare_solvers", action="store_true",
                    help="MEMIT twice on the same requests: v* one by one, then batched (no targets cache)")
    ap.add_argument("--stream", type=int, default=0,
                    help="lifelong: --stream T batches of --seq_batch requests, measured after each batch")
    ap.add_argument("--out", default="runs/bench_editing")
    a = ap.parse_args(argv)
    from llm_forget.logs import setup

    setup(logging.INFO, timestamps=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from llm_forget import io
    from llm_forget.editing.config import EditConfig
    from llm_forget.editing.metrics_counterfact import counterfact_metrics
    from llm_forget.editing.requests import read_counterfact
    from llm_forget.editing.run import apply_edits
    from llm_forget.models import load_model, load_tokenizer
    from llm_forget.zoo import resolve_model_path

    path = resolve_model_path(a.model)
    tok = load_tokenizer(path)
    requests = read_counterfact(a.requests, a.n)
    out = Path(a.out)
    results = {"model": a.model, "n_requests": len(requests), "n_tokens": a.n_tokens, "args": vars(a),
               "machine": {"cpu_threads": torch.get_num_threads(), "python": platform.python_version()},
               "runs": {}}
    model = load_model(path, "float32")
    t = time.perf_counter()
    pre = counterfact_metrics(model, tok, requests)["summary"]
    results["pre"] = pre
    results["pre_eval_seconds"] = time.perf_counter() - t
    logging.info("pre-edit: %s", pre)
    runs = [(m, lam, a.v_batch) for m in a.methods.split(",")
            for lam in ([float(x) for x in a.lambdas.split(",")] if m == "memit" and a.lambdas else [a.mom2_weight])]
    if a.compare_solvers:
        runs = [("memit", a.mom2_weight, 1), ("memit", a.mom2_weight, a.v_batch)]
    for method, lam, v_batch in runs:
        name = f"memit@{lam:g}" if method == "memit" and a.lambdas else method
        if a.compare_solvers:
            name = "memit v* one-by-one" if v_batch == 1 else f"memit v* batched {v_batch}"
        stream = a.stream and method in ("memit", "alphaedit")
        if stream:
            name = f"{method} {a.stream}x{a.seq_batch}"
        cfg = EditConfig(method=method, model=a.model, output_dir=str(out), requests=a.requests,
                         layers=a.rome_layer if method == "rome" else a.layers, n_tokens=a.n_tokens,
                         v_steps=a.v_steps, n_value_prefixes=a.n_value_prefixes, n_key_prefixes=a.n_key_prefixes,
                         mode="batch" if method == "memit" and not stream else "sequential",
                         batch_size=1 if method == "rome" else a.seq_batch, lora_steps=60,
                         mom2_weight=lam, clamp_norm=a.clamp_norm, v_batch_size=v_batch,
                         targets_cache=not a.compare_solvers, batch_eval=bool(stream))
        model = load_model(path, "float32")  # every run starts from the unedited weights
        t = time.perf_counter()
        model, res, timings = apply_edits(model, tok, requests, cfg)
        wall = time.perf_counter() - t
        with torch.no_grad():
            post = counterfact_metrics(model, tok, requests)["summary"]
        results["runs"][name] = {"post": post, "timings": timings, "wall_seconds": wall, "layers": cfg.layers,
                                 "mode": cfg.mode, "batch_size": cfg.batch_size, "mom2_weight": lam,
                                 "v_batch": v_batch, "per_batch": res.per_batch if res else None}
        if stream:
            print_stream(name, res.per_batch)
        logging.info("%s: %s in %.0fs", name, post, wall)
        io.write_json(out / "bench_editing.json", results)
    print(f"\n{len(requests)} CounterFact edits on {a.model}; C from {a.n_tokens} WikiText-2 tokens")
    print(f"{'method':<14}{'efficacy':>10}{'paraphrase':>12}{'neighbour':>11}{'score':>8}{'stats s':>9}{'edit s':>9}")
    print(f"{'(pre-edit)':<14}{pre['efficacy_score']:>10.3f}{pre['paraphrase_score']:>12.3f}"
          f"{pre['neighbourhood_score']:>11.3f}{pre['counterfact_score']:>8.3f}")
    for m, r in results["runs"].items():
        p = r["post"]
        print(f"{m:<14}{p['efficacy_score']:>10.3f}{p['paraphrase_score']:>12.3f}{p['neighbourhood_score']:>11.3f}"
              f"{p['counterfact_score']:>8.3f}{r['timings'].get('stats_seconds', 0):>9.0f}"
              f"{r['timings']['edit_seconds']:>9.0f}")
    io.write_json(out / "bench_editing.json", results)
    print(json.dumps({m: r["post"] for m, r in results["runs"].items()}))


def print_stream(name, rows):
    print(f"\n{name}: after each batch")
    print(f"{'batch':>5}{'edits':>7}{'eff latest':>11}{'eff earlier':>12}{'eff first':>10}{'neighbour':>10}"
          f"{'fluency':>9}{'s':>7}")
    for r in rows:
        print(f"{r['batch']:>5}{r['n_edits']:>7}{r['efficacy_latest']:>11.3f}{r['efficacy_earlier']:>12.3f}"
              f"{r['efficacy_first']:>10.3f}{r['neighbourhood']:>10.3f}{r['fluency']:>9.2f}"
              f"{r['elapsed_seconds']:>7.0f}")


if __name__ == "__main__":
    main()
