"""Small pieces moved onto library code, timed against the hand-written code they replaced.

    OMP_NUM_THREADS=1 python benchmarks/bench_library_pieces.py
- KL: torch's `F.kl_div(log q, log p, log_target=True)` (llm_forget.kl.kl_rows) against the
  hand-written Σ p (log p − log q), forward + backward on (rows, vocab) logits.
- padding: llm_forget.data.encode.pad against transformers' `DataCollatorForSeq2Seq` (the
  library collator that pads input_ids, attention_mask and labels).
- harmonic mean: `statistics.harmonic_mean` against the hand-written n / Σ 1/x.
Writes benchmarks/results/library_pieces.json (median of `--repeats` runs, alternating).
"""

from __future__ import annotations

import json
import random
import statistics
import time

import torch
import torch.nn.functional as F

from _common import ROOT, run_info  # benchmarks/ is on sys.path when run as a script



def hand_kl(a, b):
    lp, lq = F.log_softmax(a.float(), -1), F.log_softmax(b.float(), -1)
    return (lp.exp() * (lp - lq)).sum(-1)


def timed(f, repeats):
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def main():
    from transformers import AutoTokenizer, DataCollatorForSeq2Seq

    from llm_forget import zoo
    from llm_forget.data.encode import pad
    from llm_forget.kl import kl_rows

    repeats = 7
    res = run_info()
    g = torch.Generator().manual_seed(0)
    a = torch.randn(256, 49152, generator=g, requires_grad=True)
    b = torch.randn(256, 49152, generator=g)
    assert torch.allclose(kl_rows(a, b), hand_kl(a, b), rtol=1e-5, atol=1e-6)
    res["kl_256x49152_fwd_bwd_s"] = {
        "hand": timed(lambda: hand_kl(a, b).sum().backward(), repeats),
        "torch_kl_div": timed(lambda: kl_rows(a, b).sum().backward(), repeats)}

    tok = AutoTokenizer.from_pretrained(str(zoo.get("tiny")))
    rnd = random.Random(0)
    items = []
    for _ in range(64):
        n = rnd.randint(20, 120)
        ids = [rnd.randrange(5, 500) for _ in range(n)]
        items.append({"input_ids": ids, "labels": [-100] * (n // 2) + ids[n // 2:]})
    col = DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100, return_tensors="pt")
    ours, lib = pad(items, tok.pad_token_id), col([dict(x) for x in items])
    assert all(torch.equal(ours[k], lib[k]) for k in ("input_ids", "attention_mask", "labels"))
    res["pad_64_items_s"] = {"encode.pad": timed(lambda: pad(items, tok.pad_token_id), 50),
                             "DataCollatorForSeq2Seq": timed(lambda: col([dict(x) for x in items]), 50)}

    vals = [rnd.uniform(0.05, 1.0) for _ in range(9)]
    res["harmonic_mean_9_values_s"] = {
        "hand": timed(lambda: [len(vals) / sum(1 / v for v in vals) for _ in range(10000)], repeats) / 10000,
        "statistics.harmonic_mean": timed(lambda: [statistics.harmonic_mean(vals) for _ in range(10000)],
                                          repeats) / 10000}
    print(json.dumps(res, indent=1))
    (ROOT / "benchmarks" / "results" / "library_pieces.json").write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
