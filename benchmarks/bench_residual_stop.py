"""MEMIT's passes after v*, with and without stopping the forward at the edited block, side by side.

    LLM_FORGET_DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_residual_stop.py [--n 100] [--rounds 2]

After the targets z are known, MEMIT spreads z − h over the edited layers: per layer it computes the keys
(forward stopped at that layer's MLP input) and the residual stream after the last edited block for every
request (`memit.block_outputs`). Since commit ce68dc7 that second pass stops at the last edited block
instead of running the whole model and its vocabulary projection. Here the same edits (SmolLM2-135M-Instruct,
the first N CounterFact requests of counterfact-edit-1k.json, layers 4-8, λ 3,000, C from 200,000 tokens, v*
read from the targets cache after the first run) are written with the stop and without it (the old pass,
restored by patching `capture_outputs` to ignore `stop_after`), alternating, in one process; the edited
weights must be equal. Writes benchmarks/results/bench_residual_stop.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from llm_forget import io
    from llm_forget.editing import hooks, memit
    from llm_forget.editing.config import EditConfig
    from llm_forget.editing.requests import read_counterfact
    from llm_forget.editing.run import apply_edits
    from llm_forget.models import load_model, load_tokenizer
    from llm_forget.zoo import resolve_model_path

    path = resolve_model_path("smollm2-135m")
    tok = load_tokenizer(path)
    requests = read_counterfact(str(DATA / "editing" / "counterfact-edit-1k.json"), a.n)
    cfg = EditConfig(method="memit", model="smollm2-135m", output_dir="runs/bench_residual_stop", layers="4-8",
                     n_tokens=200000, mom2_weight=3000.0, mode="batch", clamp_norm=4.0, v_steps=25,
                     n_value_prefixes=2, n_key_prefixes=5, v_batch_size=32, targets_cache=True)

    @contextlib.contextmanager
    def no_stop(modules, stop_after=None):
        with hooks.capture_outputs(modules) as got:
            yield got

    def run(stop: bool):
        model = load_model(path, "float32")
        if not stop:
            memit.capture_outputs = no_stop
        try:
            t = time.perf_counter()
            model, res, timings = apply_edits(model, tok, requests, cfg, progress=False)
            secs = time.perf_counter() - t
        finally:
            memit.capture_outputs = hooks.capture_outputs
        w = {k: v.detach().clone() for k, v in model.named_parameters() if "mlp.down_proj" in k}
        return secs, w

    run(True)  # warm-up: statistics and targets into their caches
    out = {"stop": [], "no_stop": []}
    ref, diff = None, 0.0
    for _ in range(a.rounds):
        for key, stop in (("no_stop", False), ("stop", True)):
            secs, w = run(stop)
            out[key].append(secs)
            ref = w if ref is None else ref
            diff = max(diff, *(float((w[k] - ref[k]).abs().max()) for k in w))
    res = {"n_requests": len(requests), "seconds": out, "ratio": sum(out["no_stop"]) / sum(out["stop"]),
           "max_weight_difference": diff,
           "machine": {"cpu_threads": torch.get_num_threads(), "platform": platform.platform(),
                       "torch": torch.__version__}}
    io.write_json(ROOT / "benchmarks" / "results" / "bench_residual_stop.json", res)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
