"""Trainer throughput and peak memory: each unlearning method against plain fine-tuning.

    .venv/bin/python benchmarks/bench_trainer.py [--model tiny-target|smollm2-135m] [--steps 20] [--runs 3]

Each configuration runs in its own process (so peak RSS is its own): plain `transformers.Trainer`
fine-tuning on forget+retain rows, and `llm_forget.unlearn` with each method, all with the same
model, rows, per-step batch (B forget + B retain rows), steps and optimizer. Reports tokens/s
(tokens of every sequence in the step, prompt and answer), peak RSS, and ratios to plain
fine-tuning and to GradDiff. Writes benchmarks/results/trainer_<model>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

METHODS = ["gradient_ascent", "grad_diff", "npo", "kl", "simnpo", "rmu"]


def child(kind: str, model: str, steps: int, batch: int) -> dict:
    import resource
    import time

    import torch
    from transformers import Trainer, TrainingArguments

    from llm_forget.data.encode import Encoder, pad
    from llm_forget.data.readers import read_rows
    from llm_forget.models import load_model, load_tokenizer
    from llm_forget.zoo import resolve_model_path

    path = resolve_model_path(model)
    tok = load_tokenizer(path)
    enc = Encoder(tok)
    forget = [enc.row(r) for r in read_rows("builtin:forget")]
    retain = [enc.row(r) for r in read_rows("builtin:retain")]
    tokens_per_step = None
    out = tempfile.mkdtemp(prefix="bench_trainer.")
    if kind == "plain":
        rows = [x for pair in zip(forget * 20, retain) for x in pair]  # B forget + B retain per step

        class DS(torch.utils.data.Dataset):
            def __len__(self):
                return len(rows)

            def __getitem__(self, i):
                return rows[i]

        m = load_model(path)
        args = TrainingArguments(output_dir=out, max_steps=steps, per_device_train_batch_size=2 * batch,
                                 learning_rate=1e-5, save_strategy="no", report_to="none", disable_tqdm=True,
                                 lr_scheduler_type="constant", remove_unused_columns=False, logging_steps=10 ** 6)
        tr = Trainer(model=m, args=args, train_dataset=DS(), data_collator=lambda b: pad(b, tok.pad_token_id))
        t = time.perf_counter()
        tr.train()
        secs = time.perf_counter() - t
        tokens_per_step = statistics.mean(len(x["input_ids"]) for x in rows[: 2 * batch * steps]) * 2 * batch
    else:
        import logging

        logging.disable(logging.WARNING)
        import llm_forget

        t = time.perf_counter()
        res = llm_forget.unlearn(str(Path(llm_forget.__file__).parent / "recipes" / f"{kind}.yaml"), model=path,
                                 output_dir=out, overwrite=True, max_steps=steps, learning_rate=1e-5,
                                 per_device_train_batch_size=batch, eval_suite="none", disable_tqdm=True,
                                 retain_budget=None, logging_steps=10 ** 6, lr_scheduler_type="constant")
        secs = res.timings["train_seconds"]
        tokens_per_step = statistics.mean(len(x["input_ids"]) for x in forget + retain) * 2 * batch
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB on Linux
    return {"kind": kind, "seconds": secs, "tokens_per_s": tokens_per_step * steps / secs, "peak_rss_mib": rss}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny-target")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--child", default=None)
    a = ap.parse_args()
    if a.child:
        print("RESULT " + json.dumps(child(a.child, a.model, a.steps, a.batch)))
        return
    results = {}
    for kind in ["plain", *METHODS]:
        runs = []
        for _ in range(a.runs):
            p = subprocess.run([sys.executable, __file__, "--child", kind, "--model", a.model, "--steps", str(a.steps),
                                "--batch", str(a.batch)], capture_output=True, text=True, env=os.environ)
            line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
            if not line:
                raise SystemExit(f"{kind} failed:\n{p.stderr[-2000:]}")
            runs.append(json.loads(line[0][7:]))
        results[kind] = {"tokens_per_s": statistics.median(r["tokens_per_s"] for r in runs),
                         "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in runs), "runs": runs}
        print(kind, round(results[kind]["tokens_per_s"]), "tok/s", round(results[kind]["peak_rss_mib"]), "MiB", flush=True)
    base, gd = results["plain"], results["grad_diff"]
    lines = [f"Machine: {os.cpu_count()} CPU cores ({platform.machine()}), torch threads "
             f"{os.environ.get('OMP_NUM_THREADS', 'default')}; model {a.model}; {a.steps} steps, {a.batch} forget + "
             f"{a.batch} retain rows per step; median of {a.runs} runs, each in its own process.", "",
             "| trainer | tokens/s | x plain | peak RSS MiB | x GradDiff RSS |", "|---|---|---|---|---|"]
    for k, v in results.items():
        lines.append(f"| {k} | {v['tokens_per_s']:.0f} | {v['tokens_per_s'] / base['tokens_per_s']:.2f} | "
                     f"{v['peak_rss_mib']:.0f} | {v['peak_rss_mib'] / gd['peak_rss_mib']:.2f} |")
    table = "\n".join(lines)
    print(table)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / f"trainer_{a.model}.json").write_text(json.dumps({"args": vars(a), "results": results}, indent=2))
    (out / f"trainer_{a.model}.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
