"""One model, both conventions: the numbers llm_forget reports next to the ones the older convention
(or open-unlearning's) gives on the same rows, for the README's "Differences with the ecosystem".

    python benchmarks/eval_conventions.py   # -> benchmarks/results/eval_conventions.json
    python benchmarks/eval_conventions.py --smollm2   # also ROUGE-L of SmolLM2-135M on TOFU forget01

Model: the zoo's tiny-target (trained on the built-in benchmark's forget and retain people) and
tiny-retain (trained without the forget people); members = builtin:forget, non-members =
builtin:holdout (50 rows each). ROUGE-L: tiny-retain on the forget people it never saw (and the
untrained `tiny`), with the per-row cap (default) and with a fixed 200-token cap (open-unlearning's).
Per-token log-probs are computed here from the logits, independently of evaluation/token_metrics.py.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def per_token(model, enc, rows):
    """Per row: (log p of each answer token, argmax == label per token, eos is last)."""
    from llm_forget.data.encode import IGNORE

    out = []
    with torch.no_grad():
        for e in enc.rows(rows):
            ids = torch.tensor([e["input_ids"]])
            lab = torch.tensor(e["labels"][1:])
            lg = model(input_ids=ids).logits[0, :-1].float()
            m = lab != IGNORE
            lp = torch.log_softmax(lg[m], -1)
            y = lab[m]
            out.append((lp.gather(1, y[:, None]).squeeze(1), lp.argmax(-1) == y,
                        int(y[-1]) == enc.tokenizer.eos_token_id))
    return out


def es(correct):
    n = len(correct)
    wrong = (~correct).nonzero()
    k = 0 if wrong.numel() == 0 else int(wrong[-1]) + 1
    return 1 - k / n


def es_open_unlearning(correct):
    """open-unlearning's loop: k runs to n − 1 when no suffix matches, giving 1/n instead of 0."""
    n = len(correct)
    for k in range(n):
        if bool(correct[k:].all()):
            break
    return 1 - k / n


def mink(lp, k, rounding):
    m = max(1, rounding(len(lp) * k / 100))
    return float(torch.sort(lp).values[:m].mean())


def auc(members, nonmembers):
    from llm_forget.evaluation.mia import auc as roc

    return roc(members, nonmembers)


def main():
    from llm_forget import zoo
    from llm_forget.data.encode import Encoder
    from llm_forget.data.readers import read_rows
    from llm_forget.evaluation.mia import privleak
    from llm_forget.models import load_model, load_tokenizer

    torch.set_num_threads(1)
    forget, holdout = read_rows("builtin:forget"), read_rows("builtin:holdout")
    out = {"model": "tiny-target (retain model: tiny-retain)", "rows": {"members": len(forget),
                                                                       "nonmembers": len(holdout)}}
    aucs = {}
    for name in ("tiny-target", "tiny-retain"):
        path = str(zoo.get(name))
        model, tok = load_model(path), load_tokenizer(path)
        enc = Encoder(tok)
        f, h = per_token(model, enc, forget), per_token(model, enc, holdout)
        drop = [(lp[:-1], c[:-1]) if eos else (lp, c) for lp, c, eos in f]
        keep = [(lp, c) for lp, c, _ in f]
        if name == "tiny-target":
            out["forget_exact_memorization"] = {
                "eos_left_out (llm_forget, open-unlearning)": sum(float(c.float().mean()) for _, c in drop) / len(f),
                "eos_scored (llm_forget before)": sum(float(c.float().mean()) for _, c in keep) / len(f)}
            out["forget_extraction_strength"] = {
                "eos_left_out (llm_forget, open-unlearning)": sum(es(c) for _, c in drop) / len(f),
                "eos_scored (llm_forget before)": sum(es(c) for _, c in keep) / len(f)}
        hd = [(lp[:-1], c[:-1]) if eos else (lp, c) for lp, c, eos in h]
        hk = [(lp, c) for lp, c, _ in h]
        a = {"loss": auc([float(lp.mean()) for lp, _ in keep], [float(lp.mean()) for lp, _ in hk])}
        for label, rnd, fs, hs in (("mink_40 floor, eos left out (llm_forget, open-unlearning)", math.floor, drop, hd),
                                   ("mink_40 ceil, eos scored (llm_forget before)", math.ceil, keep, hk)):
            a[label] = auc([mink(lp, 40, rnd) for lp, _ in fs], [mink(lp, 40, rnd) for lp, _ in hs])
        aucs[name] = a
    t, r = aucs["tiny-target"], aucs["tiny-retain"]
    out["mia_auc"] = {"tiny-target": t, "tiny-retain": r}
    new = "mink_40 floor, eos left out (llm_forget, open-unlearning)"
    out["privleak"] = {
        "MUSE form on Min-K 40 % AUC (llm_forget, open-unlearning)": privleak(t[new], r[new]),
        "(A - R)/R x 100 on the loss AUC (llm_forget before)": (t["loss"] - r["loss"]) / r["loss"] * 100}
    # extraction strength of a model that reproduces nothing: the untrained tiny model
    path = str(zoo.get("tiny"))
    model, tok = load_model(path), load_tokenizer(path)
    u = per_token(model, Encoder(tok), forget)
    ud = [c[:-1] if eos else c for _, c, eos in u]
    out["untrained_forget_extraction_strength"] = {
        "0 when no suffix matches (llm_forget)": sum(es(c) for c in ud) / len(u),
        "open-unlearning's loop (1/n when no suffix matches)": sum(es_open_unlearning(c) for c in ud) / len(u),
        "exact_memorization": sum(float(c.float().mean()) for c in ud) / len(u)}
    # ROUGE-L recall of long greedy answers: per-row cap vs a fixed 200 tokens
    import llm_forget

    for who in ("tiny-retain", "tiny"):
        rouge = {}
        for label, fit in (("per-row cap min(200, 1.5|answer| + 8) (llm_forget)", True),
                           ("fixed 200 new tokens (open-unlearning)", False)):
            suite = {"name": "rouge", "datasets": {"forget": "builtin:forget"},
                     "metrics": {"generation": {"sets": ["forget"], "max_new_tokens": 200, "fit_to_answer": fit,
                                                "stop": ["\nQuestion:"]}}}
            res = llm_forget.evaluate(str(zoo.get(who)), suite, progress=False, lanes=1)
            rouge[label] = res["summary"]["forget_rougeL_recall"]
        out[f"{who}_forget_rougeL_recall"] = rouge
    tofu = ROOT.parent / "shared" / "data" / "tofu" / "forget01.json"
    if "--smollm2" in sys.argv and tofu.is_file():  # a base model rambles past the answer: the cap binds
        rouge = {}
        for label, fit in (("per-row cap min(200, 1.5|answer| + 8) (llm_forget)", True),
                           ("fixed 200 new tokens (open-unlearning)", False)):
            suite = {"name": "rouge", "datasets": {"forget": str(tofu)},
                     "metrics": {"generation": {"sets": ["forget"], "max_new_tokens": 200, "fit_to_answer": fit,
                                                "stop": ["\nQuestion:"]}}}
            res = llm_forget.evaluate(str(zoo.get("smollm2-135m")), suite, progress=False)
            rouge[label] = res["summary"]["forget_rougeL_recall"]
            rouge[label.split(" (")[0] + " seconds"] = res["groups"]["generation:forget"]["seconds"]
        out["smollm2-135m_tofu_forget01_rougeL_recall"] = rouge
    p = ROOT / "benchmarks" / "results" / "eval_conventions.json"
    p.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
