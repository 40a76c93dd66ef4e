"""swap_distill's teachers on the built-in benchmark: fabricated names against the neighbour mixture, and the
distillation's divergence, scored by the demo's evaluation and by how closely the student follows its teacher.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/swap_distill_teachers.py
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/swap_distill_teachers.py --variants fabricated,neighbours,reverse
    LLM_FORGET_CACHE=DIR LLM_FORGET_SEED=S ...      # another zoo build (tiny-target / tiny-retain from seed S)

Variants (each the shipped recipes/swap_distill.yaml with one setting changed, from the zoo's tiny-target):
fabricated (as shipped), neighbours (`teacher_names: neighbours`), reverse / jeffreys (`divergence`),
gamma4 (`gamma: 4`), lr3e-4 (`learning_rate: 3e-4`), hinge (`divergence: hinge`), hinge_neighbours (`divergence: hinge`,
`teacher_names: neighbours`), hinge_neighbours_select (the same with the shared selection of recipes/kl.yaml: retain
budget 0.05, `select_target: retrain`, `select_lr: auto`, every 2 steps, patience 4).

Per variant: the demo's evaluation (llm_forget.demo: the rows no recipe calibrates on, forget quality against the
zoo's tiny-retain) and the teacher gap: the mean over forget rows of the student's answer NLL minus its teacher's
(negative = the student still finds the true answer likelier than its teacher does), with q10 over rows; this
needs no retain model. Results: benchmarks/results/swap_distill_teachers.json, one entry per zoo build.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("LLM_FORGET_CACHE", str(ROOT / ".cache" / "llm_forget"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(ROOT / "benchmarks"))
from _common import run_info, save_per_model

VARIANTS = {"fabricated": {}, "neighbours": {"teacher_names": "neighbours"}, "reverse": {"divergence": "reverse"},
            "jeffreys": {"divergence": "jeffreys"}, "gamma4": {"gamma": 4.0}, "lr3e-4": {"learning_rate": 3e-4},
            "hinge": {"divergence": "hinge"}, "hinge_neighbours": {"divergence": "hinge", "teacher_names": "neighbours"},
            "hinge_neighbours_select": {"divergence": "hinge", "teacher_names": "neighbours", "retain_budget": 0.05,
                                        "select_target": "retrain", "select_lr": "auto", "select_every": 2,
                                        "select_patience": 4}}
RESULTS = ROOT / "benchmarks" / "results" / "swap_distill_teachers.json"
KEEP = ("forget_quality", "model_utility", "forget_perplexity", "mia_auc", "forget_truth_ratio")


def teacher_gap(model, teacher: list, items: list, pad_id: int) -> list[float]:
    """Per forget row: mean answer NLL under `model` minus under the teacher (its cached log-probs), over the
    positions that have a teacher."""
    import torch
    import torch.nn.functional as F

    from llm_forget.data.encode import pad

    out = []
    with torch.no_grad():
        for (t_logp, valid), item in zip(teacher, items):
            b = pad([item], pad_id)
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits[0, :-1]
            labels = b["labels"][0, 1:]
            y = labels[labels != -100]
            s_logp = F.log_softmax(logits[labels != -100].float(), -1)
            at = torch.arange(len(y))[valid.bool()]  # positions with a teacher (the name's own tokens have none)
            out.append(float(t_logp[at, y[at]].float().mean() - s_logp[at, y[at]].mean()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variants", default="fabricated,neighbours", help=f"comma-separated of {', '.join(VARIANTS)}")
    args = ap.parse_args()
    import statistics

    import llm_forget
    from llm_forget import zoo
    from llm_forget.demo import _evaluate, evaluation_setup
    from llm_forget.methods.swap_distill import SwapDistill
    from llm_forget.models import load_model
    from llm_forget.recipes_index import shipped

    target, retain = (str(p) for p in zoo.get_side_by_side(("tiny-target", "tiny-retain")))
    rows, _, sets, enc, tr, ref = evaluation_setup(target, retain)
    tok = enc.tokenizer
    start = load_model(target)
    items = enc.rows(rows["forget"])
    res = {"run": run_info(), "seed": zoo.seed(), "variants": {}}
    for name in args.variants.split(","):
        over = VARIANTS[name]
        with tempfile.TemporaryDirectory() as d:
            run = llm_forget.unlearn(str(shipped()["swap_distill"]), model=target, output_dir=f"{d}/run",
                                     eval_suite="none", disable_tqdm=True, **over)
            teacher = SwapDistill(**{k: v for k, v in over.items() if k in ("teacher_names", "divergence")})
            teacher.prepare_teacher(start, enc, rows["forget"], rows["retain"] + rows["holdout"], tok.pad_token_id,
                                    known_rows=rows["retain"])
            gap = teacher_gap(load_model(str(run.model_dir)), teacher.teacher, items, tok.pad_token_id)
            ev = _evaluate(run.model_dir, enc, sets, ref, tr)
        q = statistics.quantiles(gap, n=10)
        res["variants"][name] = {**{k: ev[k] for k in KEEP}, "settings": over, "teacher_gap_mean": statistics.mean(gap),
                                 "teacher_gap_q10": q[0]}
        print(name, res["variants"][name], flush=True)
    import json

    old = json.loads(RESULTS.read_text()).get(f"seed{zoo.seed()}", {}) if RESULTS.exists() else {}
    res["variants"] = {**old.get("variants", {}), **res["variants"]}  # a rerun of some variants keeps the others
    save_per_model("swap_distill_teachers", f"seed{zoo.seed()}", res)


if __name__ == "__main__":
    main()
