"""Where an unlearned model loses retain utility on TOFU: per-author answer probability against the target.

    python benchmarks/tofu_retain_by_author.py [--work benchmarks/out/tofu_tiny] [--runs forget05/kl,...]

Reads the work folder of `benchmarks/tofu_protocol.py` (models/target, runs/SPLIT/RECIPE/{model,results.json},
data/retain_SPLIT.json, data/evaluated_retain.json). For every retain row it scores the answer probability
p = exp(mean answer-token log-probability) under the target and under the unlearned model, groups the rows by
author, and reports the ratio sum(p_unlearned) / sum(p_target) per author, summarised over three kinds of
authors: `evaluation` (the suite's retain rows, TOFU's retain_perturbed), `calibration` (the rows the run's
selector measured, results.json rows.calibration.retain) and `other` (the rest of the retain set, trained on
like the calibration rows). Writes benchmarks/results/tofu_retain_by_author.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("LLM_FORGET_CACHE", str(ROOT / ".cache" / "llm_forget"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))


def row_probabilities(model, encoder, rows, batch_size: int = 64) -> list[float]:
    import torch

    from llm_forget.data.encode import pad
    from llm_forget.methods.base import token_logps

    items, out = encoder.rows(rows), []
    with torch.no_grad():
        for s in range(0, len(items), batch_size):
            b = pad(items[s:s + batch_size], encoder.tokenizer.pad_token_id)
            lp, mask = token_logps(model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits,
                                   b["labels"])
            out += torch.exp((lp * mask).sum(1) / mask.sum(1)).tolist()
    return out


def by_author(work: Path, split: str, recipe: str, target, encoder) -> dict:
    from llm_forget.models import load_model

    res = json.loads((work / "runs" / split / recipe / "results.json").read_text())
    retain = json.loads((work / "data" / f"retain_{split}.json").read_text())
    calibration = set(res["rows"]["calibration"]["retain"])
    evaluated = {r["question"] for r in json.loads((work / "data" / "evaluated_retain.json").read_text())}
    unlearned = load_model(str(work / "runs" / split / recipe / "model"), "float32").eval()
    pt, pu = row_probabilities(target, encoder, retain), row_probabilities(unlearned, encoder, retain)
    groups: dict[tuple[str, int], list[int]] = {}
    for i, r in enumerate(retain):
        kind = "calibration" if i in calibration else "evaluation" if r["question"] in evaluated else "other"
        groups.setdefault((kind, r["author"]), []).append(i)
    ratios: dict[str, list[float]] = {}
    for (kind, _), idx in groups.items():
        ratios.setdefault(kind, []).append(sum(pu[i] for i in idx) / sum(pt[i] for i in idx))
    return {k: {"authors": len(v), "mean": round(statistics.mean(v), 4), "sd": round(statistics.pstdev(v), 4),
                "min": round(min(v), 4), "max": round(max(v), 4)} for k, v in sorted(ratios.items())}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default=str(ROOT / "benchmarks" / "out" / "tofu_tiny"))
    ap.add_argument("--runs", default="forget01/kl,forget01/grad_diff,forget05/kl,forget05/grad_diff,"
                                      "forget10/kl,forget10/grad_diff", help="SPLIT/RECIPE, comma-separated")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "tofu_retain_by_author.json"))
    a = ap.parse_args(argv)
    from _common import run_info

    from llm_forget.data.encode import Encoder
    from llm_forget.models import load_model, load_tokenizer

    work = Path(a.work)
    encoder = Encoder(load_tokenizer(str(work / "models" / "target")))
    target = load_model(str(work / "models" / "target"), "float32").eval()
    out = {**run_info(), "work": str(work.relative_to(ROOT)) if work.is_relative_to(ROOT) else str(work), "runs": {}}
    for spec in a.runs.split(","):
        split, recipe = spec.split("/")
        out["runs"][spec] = by_author(work, split, recipe, target, encoder)
        print(spec, json.dumps(out["runs"][spec]), flush=True)
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
