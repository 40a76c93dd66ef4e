"""The relearning attack's loop (evaluation.robustness.relearn_steps: AdamW, constant learning rate,
answer-only loss) against the same fine-tune on transformers' Trainer (a callback measures at
each k), on the same rows, steps and batch size.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python benchmarks/bench_relearn_trainer.py --model tiny-target
Writes benchmarks/results/relearn_trainer.json: seconds for steps [10, 25, 50] (median of
--repeats, alternating) and the mean forget answer NLL after each k (both loops).
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time

import torch

from _common import ROOT, run_info, save_per_model, timings  # benchmarks/ is on sys.path when run as a script

os.environ.setdefault("LLM_FORGET_CACHE", str(ROOT / ".cache" / "llm_forget"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def mean_nll(model, encoder, rows):
    from llm_forget.data.encode import pad

    b = pad(encoder.rows(rows), encoder.tokenizer.pad_token_id)
    with torch.no_grad():
        return float(model(**b).loss)


def with_trainer(model, encoder, rows, steps, lr, bs, seed, measure):
    from torch.utils.data import Dataset
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from llm_forget.data.encode import pad

    enc = encoder.rows(rows)

    class Rows(Dataset):
        def __len__(self):
            return len(enc)

        def __getitem__(self, i):
            return enc[i]

    out = {}

    class At(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kw):
            if state.global_step in steps:
                model.eval()
                out[state.global_step] = measure(model)
                model.train()

    m = copy.deepcopy(model)
    with tempfile.TemporaryDirectory() as d:
        args = TrainingArguments(output_dir=d, max_steps=max(steps), per_device_train_batch_size=bs, learning_rate=lr,
                                 lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, optim="adamw_torch",
                                 save_strategy="no", report_to=[], logging_strategy="no", disable_tqdm=True, seed=seed,
                                 use_cpu=True, dataloader_num_workers=0)
        Trainer(model=m, args=args, train_dataset=Rows(),
                data_collator=lambda items: pad(items, encoder.tokenizer.pad_token_id), callbacks=[At()]).train()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny-target")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from llm_forget.data.encode import Encoder
    from llm_forget.data.readers import read_rows
    from llm_forget.evaluation.robustness import relearn_steps
    from llm_forget.models import load_model, load_tokenizer
    from llm_forget.zoo import resolve_model_path

    path = resolve_model_path(args.model)
    tok, model = load_tokenizer(path), load_model(path, "float32")
    enc = Encoder(tok, "Question: {question}\nAnswer:", False, 256, "truncate")
    forget = read_rows("builtin:forget")
    train, held = forget[:5], forget[5:]
    steps, lr, bs = [10, 25, 50], 1e-4, 8

    def hand():
        return {k: mean_nll(m, enc, held) for k, m in relearn_steps(model, enc, train, steps, learning_rate=lr,
                                                                     batch_size=bs, seed=0)}

    def trainer():
        return with_trainer(model, enc, train, steps, lr, bs, 0, lambda m: mean_nll(m, enc, held))

    runs = {"hand_loop": hand, "trainer": trainer}
    times, nll = {k: [] for k in runs}, {}
    for _ in range(args.repeats):
        for k, f in runs.items():
            t = time.perf_counter()
            nll[k] = f()
            times[k].append(time.perf_counter() - t)
    res = {"model": args.model, "steps": steps, "batch_size": bs, "train_rows": len(train),
           **run_info(), **timings(times),
           "held_out_forget_nll_after_k": {"before": mean_nll(model, enc, held), **nll}}
    save_per_model("relearn_trainer", args.model, res)


if __name__ == "__main__":
    main()
