"""How far task-vector negation gets on the built-in benchmark: forget vs retain perplexity.

    .venv/bin/python benchmarks/task_vector_frontier.py adam:1e-3:15:0 adam:2e-4:40:1 ... [--no-eos] [--warmup 0]

Each spec OPTIMIZER:LR:EPOCHS:SEED fine-tunes tiny-target on the forget set (answer-only loss,
batch 10, constant learning rate after `--warmup` steps; `--no-eos` leaves the closing eos out of
the loss) into θ_reinf, and sweeps θ_target − λ·(θ_reinf − θ_target) on a fine λ grid (steps of
0.25/|τ|). It prints, per spec, the largest forget-perplexity ratio whose retain-perplexity ratio
stays ≤ 1.5 (both ratios to the target model; the aim is forget ≥ 3x at retain ≤ 1.5x) and writes
every point to
benchmarks/results/task_vector_frontier.json. Perplexities from `quick_eval` (answer tokens).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    from llm_forget.data.encode import Encoder, pad, without_eos_labels
    from llm_forget.data.readers import read_rows
    from llm_forget.evaluation.quick import quick_eval
    from llm_forget.models import load_model, load_tokenizer
    from llm_forget.zoo import resolve_model_path

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("specs", nargs="+")
    ap.add_argument("--no-eos", action="store_true")
    ap.add_argument("--warmup", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "task_vector_frontier.json"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    path = resolve_model_path("tiny-target")
    tok, base = load_tokenizer(path), load_model(path, "float32")
    enc = Encoder(tok)
    forget, retain = read_rows("builtin:forget"), read_rows("builtin:retain")
    sets = {"forget": forget, "retain": retain}
    train = enc.rows(forget)
    if a.no_eos:
        train = without_eos_labels(train, tok.eos_token_id)
    theta = {k: v.clone() for k, v in base.state_dict().items()}

    def ppl(model):
        s = quick_eval(model, enc, sets, 64)["summary"]
        return s["forget_perplexity"], s["retain_perplexity"]

    f0, r0 = ppl(base)

    def reinforce(opt_name, lr, epochs, seed):
        m = copy.deepcopy(base).train()
        opt = (torch.optim.SGD if opt_name == "sgd" else torch.optim.Adam)(m.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: min(1.0, (t + 1) / a.warmup) if a.warmup else 1.0)
        rng = random.Random(seed)
        for _ in range(epochs):
            idx = list(range(len(train)))
            rng.shuffle(idx)
            for s in range(0, len(idx), 10):
                b = pad([train[i] for i in idx[s:s + 10]], tok.pad_token_id)
                loss = m(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"]).loss
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
        return {k: v.detach() - theta[k] for k, v in m.state_dict().items() if v.is_floating_point()}

    results = {"target": {"forget_ppl": f0, "retain_ppl": r0}, "no_eos": a.no_eos, "warmup": a.warmup, "runs": []}
    for spec in a.specs:
        opt_name, lr, epochs, seed = spec.split(":")
        tau = reinforce(opt_name, float(lr), int(epochs), int(seed))
        norm = math.sqrt(sum(float((t.float() ** 2).sum()) for t in tau.values()))
        points, best = [], None
        for x in range(8, 160):
            lam = x / 4 / norm
            base.load_state_dict({k: theta[k] - lam * tau[k] if k in tau else theta[k] for k in theta})
            f, r = ppl(base)
            points.append({"lambda": lam, "forget_x": f / f0, "retain_x": r / r0})
            if r / r0 <= 1.5 and (best is None or f / f0 > best["forget_x"]):
                best = points[-1]
            if r / r0 > 2.5:
                break
        base.load_state_dict(theta)
        results["runs"].append({"spec": spec, "tau_norm": norm, "best_at_retain_1.5": best, "points": points})
        print(f"{spec}: |τ| {norm:.2f}; best with retain ≤ 1.5x: " +
              (f"λ {best['lambda']:.3f}, forget {best['forget_x']:.2f}x, retain {best['retain_x']:.2f}x" if best else "none"),
              flush=True)
    Path(a.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
