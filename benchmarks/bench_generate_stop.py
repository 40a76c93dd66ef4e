"""Greedy generation with stop strings: llm_forget's `greedy` (rows leave the batch when done,
per-row caps) against transformers' `generate(stop_strings=..., tokenizer=...)` (per-row caps and
the stop-string cut applied afterwards, so both return the same texts).

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python benchmarks/bench_generate_stop.py --model tiny-target
Prompts: the built-in benchmark's forget + retain questions as the quick suite asks them (cap
min(48, 1.5 x answer tokens + 8), stop "\\nQuestion:"). Writes benchmarks/results/generate_stop.json.
"""

from __future__ import annotations

import argparse
import math
import os
import time

import torch

from _common import ROOT, run_info, save_per_model, timings  # benchmarks/ is on sys.path when run as a script

os.environ.setdefault("LLM_FORGET_CACHE", str(ROOT / ".cache" / "llm_forget"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def library_generate(model, tok, prompts, caps, batch_size, stops):
    """transformers' generate with stop strings; each row then cut to its cap, EOS and stop string."""
    from transformers import GenerationConfig

    from llm_forget.data.encode import pad
    from llm_forget.evaluation.generation import cut_at_stop, eos_ids

    eos = eos_ids(model, tok)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else eos[0]
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    out = [None] * len(prompts)
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        b = pad([{"input_ids": prompts[i], "labels": prompts[i]} for i in idx], pad_id, side="left")
        cfg = GenerationConfig(max_new_tokens=max(caps[i] for i in idx), do_sample=False, num_beams=1,
                               eos_token_id=eos, pad_token_id=pad_id, stop_strings=list(stops) or None)
        with torch.no_grad():
            gen = model.generate(input_ids=b["input_ids"], attention_mask=b["attention_mask"], generation_config=cfg,
                                 tokenizer=tok)
        for j, i in enumerate(idx):
            toks = []
            for t in gen[j, b["input_ids"].shape[1]:].tolist()[:caps[i]]:
                if t in eos:
                    break
                toks.append(t)
            out[i] = cut_at_stop(tok.decode(toks, skip_special_tokens=True), stops).strip()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny-target")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rows", type=int, default=None, help="only the first N prompts")
    args = ap.parse_args()
    from llm_forget.data.encode import Encoder
    from llm_forget.data.readers import read_rows
    from llm_forget.evaluation.generation import greedy
    from llm_forget.models import load_model, load_tokenizer
    from llm_forget.zoo import resolve_model_path

    path = resolve_model_path(args.model)
    tok, model = load_tokenizer(path), load_model(path, "float32").eval()
    rows = (read_rows("builtin:forget") + read_rows("builtin:retain"))[:args.rows]
    enc = Encoder(tok, "Question: {question}\nAnswer:", False, 256, "truncate")
    prompts = enc.prompt_ids_many([r["question"] for r in rows])
    refs = tok([" " + r["answer"].strip() for r in rows], add_special_tokens=False)["input_ids"]
    caps = [min(48, math.ceil(1.5 * len(x)) + 8) for x in refs]
    stops = ["\nQuestion:"]
    runs = {"greedy": lambda: greedy(model, tok, prompts, caps, args.batch_size, stops),
            "generate_stop_strings": lambda: library_generate(model, tok, prompts, caps, args.batch_size, stops)}
    texts, times = {}, {k: [] for k in runs}
    for _ in range(args.repeats):  # alternate, so both see the same machine load
        for k, f in runs.items():
            t = time.perf_counter()
            texts[k] = f()
            times[k].append(time.perf_counter() - t)
    same = sum(a == b for a, b in zip(texts["greedy"], texts["generate_stop_strings"]))
    res = {"model": args.model, "prompts": len(prompts), "batch_size": args.batch_size, **run_info(),
           **timings(times), "identical_texts": same}
    save_per_model("generate_stop", args.model, res)


if __name__ == "__main__":
    main()
