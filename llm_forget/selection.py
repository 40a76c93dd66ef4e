"""Checkpoint selection under a retain budget: the tuning procedure, as a Trainer callback.

Untuned unlearning either does too little or collapses the model. With `retain_budget: b`, every
`select_every` steps the callback measures forget and retain perplexity on fixed samples and
keeps (in memory) the weights with the highest forget perplexity among the states whose retain
perplexity is at most (1 + b) x the starting one. Training stops early once retain perplexity
exceeds the budget `patience` evaluations in a row; at the end the selected weights are restored.
The selection history goes into results.json, so the choice is auditable.

With `select_target: holdout` the goal is not "as much forgetting as possible" but "the forget set
looks like data the model never saw": the callback also measures the perplexity of holdout rows
(people never trained on) and keeps, within the budget, the state whose forget perplexity is closest
to the holdout perplexity, |log(ppl_forget / ppl_holdout)| smallest. Going past it over-unlearns
(forget rows become *less* likely than unseen ones, which membership inference and TOFU's forget
quality both detect), so training also stops once forget perplexity has exceeded the holdout
perplexity `patience` evaluations in a row.
"""

from __future__ import annotations

import logging
import math

import torch
from transformers import TrainerCallback

from .data.encode import pad

logger = logging.getLogger(__name__)


@torch.no_grad()
def set_perplexity(model, batches) -> float:
    """exp(token-mean NLL over answer tokens) of `model` on padded batches."""
    from .methods.base import token_logps

    was = model.training
    model.eval()
    device = next(model.parameters()).device
    total, n = 0.0, 0
    for b in batches:
        logits = model(input_ids=b["input_ids"].to(device), attention_mask=b["attention_mask"].to(device)).logits
        logp, mask = token_logps(logits, b["labels"].to(device))
        total += float(-logp.sum())
        n += int(mask.sum())
    model.train(was)
    return math.exp(total / max(n, 1))


class RetainBudgetSelector(TrainerCallback):
    """Keep the most-forgetting state within a retain-perplexity budget (see module docstring)."""

    def __init__(self, forget_items: list[dict], retain_items: list[dict], pad_id: int, budget: float,
                 every: int = 5, patience: int = 2, batch_size: int = 32, holdout_items: list[dict] | None = None):
        def batches(items):
            return [pad(items[s:s + batch_size], pad_id) for s in range(0, len(items), batch_size)]

        self.forget, self.retain = batches(forget_items), batches(retain_items)
        self.holdout = batches(holdout_items) if holdout_items else None
        self.target = "holdout" if holdout_items else "max"
        self.budget, self.every, self.patience = budget, every, patience
        self.history: list[dict] = []
        self.best_state = None
        self.best_step = None
        self.best_score = -math.inf
        self.start_retain = None
        self._over = 0
        self._past = 0

    def _trainable(self, model):
        return {k: v.detach().cpu().clone() for k, v in model.named_parameters() if v.requires_grad}

    def _measure(self, model, step):
        f, r = set_perplexity(model, self.forget), set_perplexity(model, self.retain)
        if self.start_retain is None:
            self.start_retain = r
        ok = r <= (1 + self.budget) * self.start_retain
        rec = {"step": step, "forget_perplexity": f, "retain_perplexity": r, "within_budget": ok}
        score = f  # higher is better: forget perplexity, or closeness to the holdout below
        if self.holdout is not None:  # closeness to the holdout perplexity (higher = closer)
            h = set_perplexity(model, self.holdout)
            score = -abs(math.log(f / h))
            rec["holdout_perplexity"] = h
            self._past = self._past + 1 if f > h else 0
        self.history.append(rec)
        if ok and score > self.best_score:
            self.best_score, self.best_step, self.best_state = score, step, self._trainable(model)
        self._over = 0 if ok else self._over + 1
        return ok

    def on_train_begin(self, args, state, control, model=None, **kw):
        if self.start_retain is None:
            self._measure(model, state.global_step)

    def on_step_end(self, args, state, control, model=None, **kw):
        if state.global_step % self.every == 0:
            self._measure(model, state.global_step)
            if self._over >= self.patience:
                logger.info("retain perplexity over budget for %d evaluations; stopping at step %d",
                            self._over, state.global_step)
                control.should_training_stop = True
            elif self._past >= self.patience:
                logger.info("forget perplexity above the holdout's for %d evaluations; stopping at step %d",
                            self._past, state.global_step)
                control.should_training_stop = True

    def on_train_end(self, args, state, control, model=None, **kw):
        if not self.history or self.history[-1]["step"] != state.global_step:
            self._measure(model, state.global_step)
        if self.best_state is not None:
            params = dict(model.named_parameters())
            with torch.no_grad():
                for k, v in self.best_state.items():
                    params[k].copy_(v.to(params[k].device))
            best = next(h for h in self.history if h["step"] == self.best_step)
            logger.info("selected step %s: forget perplexity %.3g%s within a retain budget of +%g%%", self.best_step,
                        best["forget_perplexity"], f" (holdout {best['holdout_perplexity']:.3g})"
                        if "holdout_perplexity" in best else "", 100 * self.budget)

    def summary(self) -> dict:
        return {"budget": self.budget, "target": self.target, "selected_step": self.best_step,
                "start_retain_perplexity": self.start_retain, "history": self.history}
