"""Greedy, batched generation (left padding, stop at EOS / a stop string / a per-item cap) and
ROUGE-L with the `rouge-score` package.

Each item has its own cap on new tokens, so what an item generates never depends on which other
items share its batch (results do not change with batch size). Items are batched after sorting
by prompt length, so little padding is decoded.

Kept instead of transformers' `generate(stop_strings=..., tokenizer=...)`, which gives the same
texts (450 of 450 on tiny-target, 128 of 128 on SmolLM2-135M) but keeps finished rows in the
batch until the longest is done: median 1.58 s against 1.37 s (tiny-target, 450 prompts) and
47.1 s against 30.1 s (SmolLM2-135M, 128 prompts), batch 64, 1 thread, 2-core x86 CPU
(benchmarks/bench_generate_stop.py, benchmarks/results/generate_stop.json). `generate` remains
the fallback for models whose cache cannot drop rows.
"""

from __future__ import annotations

import functools
import hashlib

import torch

from ..data.encode import pad
from ..models import accepts, cache_kwarg, cache_of


def rouge_l(prediction: str, reference: str, scorer=None) -> tuple[float, float]:
    """(ROUGE-L recall, ROUGE-L F1) of `prediction` against `reference`, with stemming (as TOFU
    and MUSE). recall = LCS/|reference tokens|; F1 = 2PR/(P+R), P = LCS/|prediction tokens|.
    Higher = the generation reproduces the reference (on forget data: less forgotten)."""
    if scorer is None:
        scorer = make_scorer()
    s = scorer.score(reference, prediction)["rougeL"]
    return float(s.recall), float(s.fmeasure)


@functools.cache
def make_scorer():
    """One shared rouge-score ROUGE-L scorer: its own tokenizer with the Porter stemmer it uses by default
    (TOFU and MUSE score with stemming). Stems are memoised, since the same words recur across
    hundreds of answers; no score changes."""
    from nltk.stem import porter
    from rouge_score import rouge_scorer, tokenize, tokenizers

    class StemmedTokenizer(tokenizers.Tokenizer):
        def __init__(self):
            self.stem = functools.lru_cache(maxsize=1 << 16)(porter.PorterStemmer().stem)

        def tokenize(self, text):
            return tokenize.tokenize(text, self)  # calls self.stem on words of 4+ characters

    return rouge_scorer.RougeScorer(["rougeL"], tokenizer=StemmedTokenizer())


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


def eos_ids(model, tokenizer) -> list[int]:
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    g = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if g is not None:
        ids.update([int(g)] if isinstance(g, int) else [int(x) for x in g])
    return sorted(ids)


class _Rows:
    """Per-row bookkeeping of one generation batch: tokens so far and whether each row is done
    (its cap reached, EOS emitted, or a stop string in the decoded tail)."""

    def __init__(self, caps: list[int], eos: list[int], tokenizer, stop_strings):
        self.caps, self.eos, self.tok, self.stops = caps, set(eos), tokenizer, list(stop_strings or ())
        self.new: list[list[int]] = [[] for _ in caps]
        # A stop string first appears when the token bearing its last character arrives. When every
        # stop string ends in an ASCII character (whose byte no other token can supply), only such
        # tokens need the tail decoded; otherwise every token does.
        ends = {s[-1] for s in self.stops if s}
        self.ends = ends if all(c.isascii() for c in ends) else None
        self.may_stop: dict[int, bool] = {}

    def _may_stop(self, t: int) -> bool:
        if self.ends is None:
            return True
        if t not in self.may_stop:
            piece = self.tok.decode([t], skip_special_tokens=True)
            self.may_stop[t] = any(c in piece for c in self.ends)
        return self.may_stop[t]

    def push(self, rows: list[int], tokens: list[int]) -> list[bool]:
        done = []
        for r, t in zip(rows, tokens):
            if t in self.eos:
                done.append(True)
                continue
            self.new[r].append(t)
            d = len(self.new[r]) >= self.caps[r]
            if not d and self.stops and self._may_stop(t):
                tail = self.tok.decode(self.new[r][-12:], skip_special_tokens=True)
                d = any(s in tail for s in self.stops)
            done.append(d)
        return done


@torch.no_grad()
def _greedy_cached(model, ids, mask, rows: _Rows, compact_at: float = 0.25) -> bool:
    """Greedy decoding with the model's KV cache. A row that is done stops counting at once; the
    finished rows leave the batch (their cache rows are dropped) once they are `compact_at` of it,
    so neither a long answer nor re-copying the cache at every finished row slows the batch.
    False (nothing generated) when the model's cache cannot drop rows."""
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    kw = {"position_ids": pos} if accepts(model, "position_ids") else {}
    first = {"logits_to_keep": 1} if accepts(model, "logits_to_keep") else {}
    name = cache_kwarg(model) or "past_key_values"
    out = model(input_ids=ids, attention_mask=mask, use_cache=True, **kw, **first)
    cache, active = cache_of(out), torch.arange(ids.shape[0], device=ids.device)
    if not hasattr(cache, "batch_select_indices"):
        return False  # a cache type that cannot drop rows: the caller falls back to generate()
    logits, last = out.logits[:, -1], pos[:, -1]
    live = torch.ones(ids.shape[0], dtype=torch.bool, device=ids.device)
    while True:
        nxt = logits.argmax(-1)
        at = live.nonzero().squeeze(1)
        done = rows.push(active[at].tolist(), nxt[at].tolist())
        live[at[torch.tensor(done, dtype=torch.bool, device=ids.device)]] = False
        n_live = int(live.sum())
        if n_live == 0:
            return True
        if n_live <= (1 - compact_at) * live.numel():
            cache.batch_select_indices(at := live.nonzero().squeeze(1))
            active, nxt, mask, last, live = active[at], nxt[at], mask[at], last[at], live[at]
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], 1)
        last = last + live  # a finished row, still in the batch, stays at its last position
        if kw:
            kw["position_ids"] = last[:, None]
        out = model(input_ids=nxt[:, None], attention_mask=mask, use_cache=True, **{name: cache}, **kw)
        cache, logits = cache_of(out), out.logits[:, -1]


def _greedy_generate(model, ids, mask, rows: _Rows, eos: list[int], pad_id: int) -> None:
    """Fallback for models without a batch-selectable KV cache: `model.generate`, then the same
    per-row cut (EOS, cap, stop strings)."""
    from transformers import GenerationConfig

    cap = max(rows.caps)
    if hasattr(model, "generation_config"):
        cfg = GenerationConfig(max_new_tokens=cap, do_sample=False, num_beams=1, eos_token_id=eos, pad_token_id=pad_id)
        gen = model.generate(input_ids=ids, attention_mask=mask, generation_config=cfg)
    else:
        gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=cap, eos_token_id=eos[0],
                             pad_token_id=pad_id)
    for r, toks in enumerate(gen[:, ids.shape[1]:].tolist()):
        for t in toks:
            if rows.push([r], [t])[0]:
                break


def _has_selectable_cache(model) -> bool:
    from transformers import PreTrainedModel

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return isinstance(base, PreTrainedModel) and getattr(base, "_supports_cache_class", True) is not False


class Stopped(RuntimeError):
    """Generation was asked to stop (its caller failed or was interrupted)."""


@torch.no_grad()
def greedy(model, tokenizer, prompts: list[list[int]], caps: list[int], batch_size: int = 32,
           stop_strings=(), progress=None, stopping=None) -> list[str]:
    """Greedy continuations of token-id `prompts`, each cut at EOS, its cap and stop strings.

    Batches are left-padded; a row leaves its batch as soon as it is done, so the cost is the
    tokens actually generated, not batch size x the longest answer. `stopping` (a
    threading.Event): when set, `Stopped` is raised before the next batch."""
    model.eval()
    device = next(model.parameters()).device
    eos = eos_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    cached = _has_selectable_cache(model)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    out: list[str | None] = [None] * len(prompts)
    for s in range(0, len(order), batch_size):
        if stopping is not None and stopping.is_set():
            raise Stopped("generation stopped")
        idx = order[s:s + batch_size]
        b = pad([{"input_ids": prompts[i], "labels": prompts[i]} for i in idx], pad_id, side="left")
        ids, mask = b["input_ids"].to(device), b["attention_mask"].to(device)
        rows = _Rows([max(1, caps[i]) for i in idx], eos, tokenizer, stop_strings)
        if not (cached and _greedy_cached(model, ids, mask, rows)):
            _greedy_generate(model, ids, mask, rows, eos, pad_id)
        for j, i in enumerate(idx):
            out[i] = cut_at_stop(tokenizer.decode(rows.new[j], skip_special_tokens=True), stop_strings).strip()
        if progress is not None:
            progress.update(len(idx))
    return out
