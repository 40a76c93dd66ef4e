"""Lifelong editing: a stream of edit batches, measured after each batch.

After batch t (of requests B_1 … B_t already written), one row of the table:
- efficacy_latest  = E[P(o*) > P(o_true)] on B_t's edit prompts           (higher = better)
- efficacy_earlier = the same on B_1 ∪ … ∪ B_{t−1} (NaN after the first)  (higher = better;
                     earlier edits must survive later ones)
- efficacy_first   = the same on B_1 alone                                  (higher = better)
- neighbourhood    = E[P(o_true) > P(o*)] on the neighbour prompts of B_1 (all of its requests, or
                     the first `n_neighbour_requests`), the same prompts every row (higher = better)
- fluency          = `metrics_counterfact.fluency` of greedy continuations of a fixed set of
                     B_1 prompts (`fluency_prompts`)                        (higher = better)
The row for t = 0 (nothing written yet) is the unedited model's.
"""

from __future__ import annotations

import logging
import math
import time

from .metrics_counterfact import fluency, prob_wins
from .targets import score_targets

logger = logging.getLogger(__name__)


def efficacy(model, tokenizer, requests) -> float:
    """E[P(o*) > P(o_true)] on the requests' own prompts (NaN for none)."""
    reqs = [r for r in requests if r.target_true]
    if not reqs:
        return float("nan")
    prompts = [r.prompt for r in reqs for _ in (0, 1)]
    targets = [t for r in reqs for t in (r.target_new, r.target_true)]
    s = score_targets(model, tokenizer, prompts, targets)
    return prob_wins([x["nll"] for x in s[0::2]], [x["nll"] for x in s[1::2]])


def neighbourhood(model, tokenizer, requests) -> float:
    """E[P(neighbour's own answer) > P(o*)] over the requests' neighbour prompts (NaN for none)."""
    pairs = [(q, a, r.target_new) for r in requests for q, a in r.neighbourhood]
    if not pairs:
        return float("nan")
    prompts = [q for q, *_ in pairs for _ in (0, 1)]
    targets = [t for _, a, new in pairs for t in (a, new)]
    s = score_targets(model, tokenizer, prompts, targets)
    return prob_wins([x["nll"] for x in s[0::2]], [x["nll"] for x in s[1::2]])


class StreamTable:
    """Collects one row per batch; use `after_batch` as the editing functions' callback."""

    def __init__(self, model, tokenizer, first_batch, n_neighbour_requests: int | None = None, fluency_prompts: int = 3,
                 max_new_tokens: int = 30):
        self.model, self.tok = model, tokenizer
        self.first = list(first_batch)
        self.neigh = self.first[:n_neighbour_requests]
        self.flu = [r.prompt for r in self.first[:fluency_prompts]]
        self.max_new_tokens = max_new_tokens
        self.done: list = []
        self.rows: list[dict] = []
        self.t0 = time.perf_counter()
        self.rows.append(self._row(0, [], 0))

    def _row(self, t: int, latest, n_edits: int) -> dict:
        import torch

        with torch.no_grad():
            row = {"batch": t, "n_edits": n_edits,
                   "efficacy_latest": efficacy(self.model, self.tok, latest) if latest else efficacy(
                       self.model, self.tok, self.first),
                   "efficacy_earlier": efficacy(self.model, self.tok, self.done) if self.done else float("nan"),
                   "efficacy_first": efficacy(self.model, self.tok, self.first),
                   "neighbourhood": neighbourhood(self.model, self.tok, self.neigh),
                   "fluency": fluency(self.model, self.tok, self.flu, self.max_new_tokens) if self.flu else math.nan}
        row["elapsed_seconds"] = time.perf_counter() - self.t0
        return row

    def after_batch(self, i: int, batch) -> None:
        self.rows.append(self._row(i + 1, batch, len(self.done) + len(batch)))
        self.done += list(batch)
        r = self.rows[-1]
        logger.info("after batch %d (%d edits): efficacy latest %.3f, earlier %.3f, first %.3f; neighbourhood %.3f; "
                    "fluency %.2f; %.0f s", r["batch"], r["n_edits"], r["efficacy_latest"], r["efficacy_earlier"],
                    r["efficacy_first"], r["neighbourhood"], r["fluency"], r["elapsed_seconds"])
