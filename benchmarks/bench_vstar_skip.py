"""Batched v* with and without skipping the blocks below the edited one, side by side in one process.

    .venv/bin/python benchmarks/bench_vstar_skip.py      # results: benchmarks/results/bench_vstar_skip.json

SmolLM2-135M-Instruct fp32, CounterFact requests 500-531 of counterfact-edit-1k.json (one v* batch of 32), layer 8,
25 steps, 2 value prefixes, clamp 4, prefix cache on. The two variants alternate (skip, full, skip, full) so a change
in machine load hits both; the largest relative difference between their δ is reported (float rounding only).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--first", type=int, default=500, help="first request of the batch")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=str(RESULTS / "bench_vstar_skip.json"))
    a = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from llm_forget import io
    from llm_forget.editing import batched_values as bv
    from llm_forget.editing.locate import ValueConfig, context_prefixes
    from llm_forget.editing.requests import read_counterfact
    from llm_forget.models import arch_for, load_model, load_tokenizer
    from llm_forget.zoo import resolve_model_path

    skip_rule = bv.can_skip_layers
    path = resolve_model_path("smollm2-135m")
    tok, model = load_tokenizer(path), load_model(path, "float32")
    reqs = read_counterfact(str(DATA / "editing" / "counterfact-edit-1k.json"), a.first + a.n)[a.first:]
    arch = arch_for(model)
    prefixes = context_prefixes(model, tok, 2, 10, seed=0)
    cfg = ValueConfig(steps=25, n_prefixes=2, clamp_norm=4.0)
    times, deltas = {"skip": [], "full": []}, {}
    for _ in range(a.rounds):
        for name in ("skip", "full"):
            bv.can_skip_layers = skip_rule if name == "skip" else (lambda base: False)
            t = time.perf_counter()
            deltas[name], _, steps = bv.compute_value_deltas(model, tok, reqs, 8, prefixes, arch, cfg, "block", True)
            times[name].append(time.perf_counter() - t)
            print(f"{name}: {times[name][-1]:.1f} s, {sum(steps)} request-steps", flush=True)
    bv.can_skip_layers = skip_rule
    d, ref = deltas["skip"], deltas["full"]
    res = {"threads": torch.get_num_threads(), "python": platform.python_version(), "torch": torch.__version__,
           "requests": f"counterfact-edit-1k {a.first}-{a.first + a.n - 1}", "skip_seconds": times["skip"],
           "full_seconds": times["full"], "speedup": sum(times["full"]) / sum(times["skip"]),
           "max_relative_difference": float(((d - ref).norm(dim=1) / ref.norm(dim=1)).max())}
    io.write_json(Path(a.out), res)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
