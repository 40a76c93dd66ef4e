"""Greedy, batched generation (left padding, stop at EOS / a stop string / a per-item cap) and
ROUGE-L with the `rouge-score` package.

Each item has its own cap on new tokens, so what an item generates never depends on which other
items share its batch (results do not change with batch size). Items are batched after sorting
by prompt length, so little padding is decoded.
"""

from __future__ import annotations

import hashlib

import torch

from ..data.encode import pad


def rouge_l(prediction: str, reference: str, scorer=None) -> tuple[float, float]:
    """(ROUGE-L recall, ROUGE-L F1) of `prediction` against `reference`, with stemming (as TOFU
    and MUSE). recall = LCS/|reference tokens|; F1 = 2PR/(P+R), P = LCS/|prediction tokens|.
    Higher = the generation reproduces the reference (on forget data: less forgotten)."""
    if scorer is None:
        scorer = make_scorer()
    s = scorer.score(reference, prediction)["rougeL"]
    return float(s.recall), float(s.fmeasure)


def make_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def text_hash(text: str) -> str:
    """Short content hash of a generation: greedy agreement is compared on hashes, so no
    generated forget text is stored."""
    return hashlib.sha256(text.strip().encode("utf-8")).hexdigest()[:16]


def cut_at_stop(text: str, stop_strings) -> str:
    """`text` up to the first occurrence of any stop string."""
    cut = len(text)
    for s in stop_strings or ():
        i = text.find(s)
        if i >= 0:
            cut = min(cut, i)
    return text[:cut]


class _RowStop:
    """Per-row stopping: a row is done at its own cap or once a stop string appears."""

    def __init__(self, prompt_len, caps, tokenizer, stop_strings):
        self.prompt_len, self.caps, self.tok, self.stops = prompt_len, caps, tokenizer, list(stop_strings or ())

    def __call__(self, input_ids, scores, **kwargs):
        n_new = input_ids.shape[1] - self.prompt_len
        done = self.caps.to(input_ids.device) <= n_new
        if self.stops:
            tails = self.tok.batch_decode(input_ids[:, self.prompt_len:][:, -12:], skip_special_tokens=True)
            done |= torch.tensor([any(s in t for s in self.stops) for t in tails], device=input_ids.device)
        return done


def eos_ids(model, tokenizer) -> list[int]:
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    g = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if g is not None:
        ids.update([int(g)] if isinstance(g, int) else [int(x) for x in g])
    return sorted(ids)


@torch.no_grad()
def greedy(model, tokenizer, prompts: list[list[int]], caps: list[int], batch_size: int = 32,
           stop_strings=(), progress=None) -> list[str]:
    """Greedy continuations of token-id `prompts`, each cut at EOS, its cap and stop strings."""
    from transformers import GenerationConfig, StoppingCriteriaList

    model.eval()
    device = next(model.parameters()).device
    eos = eos_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    out: list[str | None] = [None] * len(prompts)
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        b = pad([{"input_ids": prompts[i], "labels": prompts[i]} for i in idx], pad_id, side="left")
        ids, mask = b["input_ids"].to(device), b["attention_mask"].to(device)
        bcaps = torch.tensor([caps[i] for i in idx])
        cfg = GenerationConfig(max_new_tokens=int(bcaps.max()), do_sample=False, num_beams=1,
                               eos_token_id=eos, pad_token_id=pad_id)
        stop = StoppingCriteriaList([_RowStop(ids.shape[1], bcaps, tokenizer, stop_strings)])
        gen = model.generate(input_ids=ids, attention_mask=mask, generation_config=cfg, stopping_criteria=stop)
        new = gen[:, ids.shape[1]:].tolist()
        for j, i in enumerate(idx):
            toks = new[j][: caps[i]]
            for k, t in enumerate(toks):
                if t in eos:
                    toks = toks[:k]
                    break
            out[i] = cut_at_stop(tokenizer.decode(toks, skip_special_tokens=True), stop_strings).strip()
        if progress is not None:
            progress.update(len(idx))
    return out
