"""The selection's measurements with rows batched by length against rows batched in their order, same process.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_selector_batches.py [--rounds 3] [--models tiny,smollm2]

`RetainBudgetSelector` scores its calibration rows (forget, retain, holdout) every `select_every` steps; that is
most of a selected run's time (a SmolLM2 run from a description: 71 % by py-spy). Its batches used to follow the
rows' order; `selection.length_batches` puts rows of similar length together. Both are timed here, alternating,
on the rows a shipped run measures (the shipped recipes' eval batch, 8):
- tiny: tiny-target on the built-in benchmark's calibration sets (50 forget, 100 retain, 25 holdout rows);
- smollm2: SmolLM2-135M-Instruct on TOFU rows (forget01's 40 rows, 100 retain90 rows of 5 authors, 20 rows of
  the protocol's holdout authors), the shapes of the reduced SmolLM2 protocol.
Reported per model: padding efficiency (real tokens / tokens run) of each batching, median seconds of one full
measurement, the ratio, and the largest per-row NLL difference (float rounding only). Writes
benchmarks/results/bench_selector_batches.json.
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
DATA = Path(os.environ.get("LLM_FORGET_DATA_DIR", ROOT.parent / "shared" / "data"))


def row_order_batches(items, pad_id, batch_size):
    """The selector's batches before `length_batches`: rows in their order."""
    from llm_forget.data.encode import pad

    return [pad(items[s:s + batch_size], pad_id) for s in range(0, len(items), batch_size)]


def sets_for(name: str) -> tuple[str, dict[str, list[dict]]]:
    from llm_forget import zoo
    from llm_forget.data.readers import read_rows

    if name == "tiny":
        return str(zoo.get("tiny-target")), {
            "forget": read_rows("builtin:forget")[:50], "retain": read_rows("builtin:retain")[:100],
            "holdout": read_rows("builtin:holdout")[:25]}
    tofu = DATA / "tofu"
    r90 = json.loads((tofu / "retain90.json").read_text())
    return str(zoo.get("smollm2-135m")), {
        "forget": json.loads((tofu / "forget01.json").read_text()), "retain": r90[400:500],
        "holdout": r90[3560:3580]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--models", default="tiny,smollm2")
    ap.add_argument("--batch-size", type=int, default=8, help="the recipes' per_device_eval_batch_size")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _common import run_info, save_per_model, timings

    from llm_forget.data.encode import Encoder
    from llm_forget.models import load_model, load_tokenizer
    from llm_forget.selection import length_batches, row_nlls

    for name in args.models.split(","):
        path, sets = sets_for(name)
        tok, model = load_tokenizer(path), load_model(path)
        enc = Encoder(tok, "Question: {question}\nAnswer:")
        items = {k: enc.rows(v) for k, v in sets.items()}
        variants = {"row order": lambda it: row_order_batches(it, tok.pad_token_id, args.batch_size),
                    "by length": lambda it: length_batches(it, tok.pad_token_id, args.batch_size)}
        batches = {v: {k: f(it) for k, it in items.items()} for v, f in variants.items()}
        real = sum(len(x["input_ids"]) for it in items.values() for x in it)
        efficiency = {v: round(real / sum(b["input_ids"].numel() for bs in sets_.values() for b in bs), 3)
                      for v, sets_ in batches.items()}
        times = {v: [] for v in variants}
        nll = {}
        row_nlls(model, batches["row order"]["forget"][:1])  # warm-up
        for _ in range(args.rounds):
            for v in variants:
                t = time.perf_counter()
                nll[v] = {k: row_nlls(model, bs) for k, bs in batches[v].items()}
                times[v].append(time.perf_counter() - t)
        diff = max(abs(a[0] / max(a[1], 1) - b[0] / max(b[1], 1)) for k in items
                   for a, b in zip(nll["row order"][k], nll["by length"][k]))
        assert all(a[1] == b[1] for k in items for a, b in zip(nll["row order"][k], nll["by length"][k]))
        t = timings(times)
        res = {**run_info(), "model": path, "rows": {k: len(v) for k, v in sets.items()},
               "batch_size": args.batch_size, "padding_efficiency": efficiency, **t,
               "speedup": round(t["median_seconds"]["row order"] / t["median_seconds"]["by length"], 3),
               "max_row_mean_nll_difference": diff}
        save_per_model("bench_selector_batches", name, res)


if __name__ == "__main__":
    main()
