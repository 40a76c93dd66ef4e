"""LoRA editing's loop (editing.lora_edit.lora_edit: AdamW, constant learning rate, NLL of the new
targets + KL to the adapter-disabled model on neighbour prompts) against the same objective on
transformers' Trainer (compute_loss overridden), same requests, steps, batch size and seed.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 LLM_FORGET_DATA_DIR=../shared/data \\
      python benchmarks/bench_lora_edit_trainer.py --model tiny-target
Writes benchmarks/results/lora_edit_trainer.json: seconds (median of --repeats, alternating) and
the edited models' mean NLL of the new targets.
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time

import torch
import torch.nn.functional as F

from _common import ROOT, run_info, save_per_model, timings  # benchmarks/ is on sys.path when run as a script

os.environ.setdefault("LLM_FORGET_CACHE", str(ROOT / ".cache" / "llm_forget"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LLM_FORGET_DATA_DIR", str(ROOT.parent / "shared" / "data"))


def on_trainer(model, tokenizer, requests, cfg, arch):
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainingArguments

    from llm_forget.editing.lora_edit import _batch
    from llm_forget.kl import kl_rows
    from llm_forget.models import num_layers

    layers = cfg.layers if cfg.layers is not None else range(num_layers(model))
    targets = [f"{arch.layers}.{i}.{arch.mlp_out}" for i in layers]
    torch.manual_seed(cfg.seed)
    pm = get_peft_model(model, LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, target_modules=targets,
                                          fan_in_fan_out=arch.conv1d, task_type="CAUSAL_LM"))

    class EditTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            rs = [requests[i] for i in inputs["idx"].tolist()]
            x, m, y = _batch(tokenizer, [r.prompt for r in rs], [r.target_new for r in rs])
            sel = y[:, 1:] != -100
            loss = F.cross_entropy(model(input_ids=x, attention_mask=m).logits[:, :-1][sel].float(), y[:, 1:][sel])
            neigh = [(q, a) for r in rs for q, a in r.neighbourhood]
            if neigh and cfg.kl_weight > 0:
                xn, mn, yn = _batch(tokenizer, [q for q, _ in neigh], [a for _, a in neigh])
                seln = yn[:, 1:] != -100
                with torch.no_grad(), model.disable_adapter():
                    base = model(input_ids=xn, attention_mask=mn).logits[:, :-1][seln]
                new = model(input_ids=xn, attention_mask=mn).logits[:, :-1][seln]
                loss = loss + cfg.kl_weight * kl_rows(base, new).mean()
            return loss

    with tempfile.TemporaryDirectory() as d:
        args = TrainingArguments(output_dir=d, max_steps=cfg.steps, per_device_train_batch_size=cfg.batch_size,
                                 learning_rate=cfg.lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
                                 optim="adamw_torch", save_strategy="no", report_to=[], logging_strategy="no",
                                 disable_tqdm=True, seed=cfg.seed, use_cpu=True, remove_unused_columns=False,
                                 max_grad_norm=0.0)
        EditTrainer(model=pm, args=args, train_dataset=list(range(len(requests))),
                    data_collator=lambda items: {"idx": torch.tensor(items)}).train()
    pm.eval()
    return pm


def target_nll(model, tokenizer, requests):
    from llm_forget.editing.lora_edit import _batch

    x, m, y = _batch(tokenizer, [r.prompt for r in requests], [r.target_new for r in requests])
    with torch.no_grad():
        lg = model(input_ids=x, attention_mask=m).logits[:, :-1]
    sel = y[:, 1:] != -100
    return float(F.cross_entropy(lg[sel].float(), y[:, 1:][sel]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny-target")
    ap.add_argument("--requests", default="hf:azhx/counterfact@train")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from llm_forget.editing.lora_edit import LoraEditConfig, lora_edit
    from llm_forget.editing.requests import read_requests
    from llm_forget.models import arch_for, load_model, load_tokenizer
    from llm_forget.zoo import resolve_model_path

    path = resolve_model_path(args.model)
    tok, base = load_tokenizer(path), load_model(path, "float32")
    reqs = read_requests(args.requests, limit=args.n)
    cfg = LoraEditConfig(steps=args.steps, lr=1e-2, layers=None)
    arch = arch_for(base)
    runs = {"hand_loop": lambda: lora_edit(copy.deepcopy(base), tok, reqs, cfg, arch, progress=False),
            "trainer": lambda: on_trainer(copy.deepcopy(base), tok, reqs, cfg, arch)}
    times, nll = {k: [] for k in runs}, {}
    for _ in range(args.repeats):
        for k, f in runs.items():
            t = time.perf_counter()
            m = f()
            times[k].append(time.perf_counter() - t)
            nll[k] = target_nll(m, tok, reqs)
    res = {"model": args.model, "requests": len(reqs), "steps": cfg.steps, "batch_size": cfg.batch_size,
           **run_info(), **timings(times),
           "target_nll": {"before": target_nll(base, tok, reqs), **nll}}
    save_per_model("lora_edit_trainer", args.model, res)


if __name__ == "__main__":
    main()
