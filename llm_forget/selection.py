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

`select_target: retrain` (the shipped recipes' setting) is the same with the reference of "never seen"
chosen automatically: the calibration part of the holdout when there is one, else `swapped_rows` (the
forget questions with answers swapped among the forget rows, scored once by the starting model).
`select_lr: auto` lets the callback find its own step size from the budget (`_adapt_lr`): the learning rate
halves when one measurement interval spends more than 1/8 of the retain budget and doubles while forgetting
stalls, so the budget is spent over many small steps rather than a few large ones. For a loss with a fixed point
(`Method.fixed_point`: row_target) forgetting that stops near the reference has arrived rather than stalled, so the
rate is not doubled there (doubling made such a run overspend, be taken back and search the plateau at random), nor
after an interval in which forgetting went backwards (the rate already makes rows cross their targets; doubling it
made runs alternate between doubling and take-backs at the budget's edge and end short of the reference).
An interval that ends over the budget is also taken back (`_backtrack`): the weights return to the selected state
so far and the optimizer's moments are cleared, so the halved rate starts again from a state within budget instead
of from the overshoot (without it, a first step that spends the budget several times over leaves nothing the selector
may keep, and the run returns its input unchanged).

`select_stall: N` (off by default) also ends a run once N measurements in a row kept no new state: for a loss
with a fixed point (`row_target`), which neither overshoots the reference nor leaves the budget, so neither rule
above ever ends it. It trades cost for which state is kept (BENCHMARKS.md, "Per-row never-seen targets").

`select_target: truth_ratio` is `retrain` with a second test: where the forget and holdout calibration rows
carry perturbed answers, the score is -max(D_loss, D_tr), the two-sample KS distances between the forget and
holdout rows' answer losses and their truth ratios (`_match`), so the state kept is the one the worse of the
two tests tells apart least; training stops once forget perplexity is past the reference's and the loss test
is the one that binds, `patience` evaluations in a row.

Calibration rows are kept apart from evaluation rows (`calibration_split`): the holdout is split by
person/document into a calibration and an evaluation part, and the retain rows the callback measures are
left out of the retain rows the run's evaluation reports on.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import time

import torch
from transformers import TrainerCallback

from .data.encode import pad

logger = logging.getLogger(__name__)


@torch.no_grad()
def row_nlls(model, batches) -> list[tuple[float, int]]:
    """(sum of NLL over answer tokens, number of answer tokens) of every row of the padded batches, in row
    order: a batch with an "index" list (`length_batches`) holds those rows, otherwise rows follow the batches."""
    from .methods.base import sequence_logp

    was = model.training
    model.eval()
    device = next(model.parameters()).device
    out, where = [], []
    for b in batches:
        logits = model(input_ids=b["input_ids"].to(device), attention_mask=b["attention_mask"].to(device)).logits
        logp, n = sequence_logp(logits, b["labels"].to(device))
        out += [(float(-lp), int(k)) for lp, k in zip(logp, n)]
        where += b.get("index", range(len(where), len(where) + len(logp)))
    model.train(was)
    rows = [None] * len(out)
    for i, r in zip(where, out):
        rows[i] = r
    return rows


def length_batches(items: list[dict], pad_id: int, batch_size: int) -> list[dict]:
    """Padded batches of `items` with rows of similar length together (longest first), each with the "index"
    of its rows, so that `row_nlls` returns them in the items' order: fewer pad tokens through the model
    than batches in row order (rows' own numbers change by float rounding only; the mask hides padding)."""
    order = sorted(range(len(items)), key=lambda i: (-len(items[i]["input_ids"]), i))
    chunks = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    return [{**pad([items[i] for i in c], pad_id), "index": c} for c in chunks]


def perplexity_of(rows: list[tuple[float, int]]) -> float:
    """exp(token-mean NLL) over rows of (NLL sum, token count)."""
    return math.exp(sum(s for s, _ in rows) / max(sum(n for _, n in rows), 1))


def set_perplexity(model, batches) -> float:
    """exp(token-mean NLL over answer tokens) of `model` on padded batches."""
    return perplexity_of(row_nlls(model, batches))


def ks_distance(a: list[float], b: list[float]) -> float:
    """Two-sample Kolmogorov-Smirnov statistic D = sup_x |F_a(x) - F_b(x)| (0: the samples look alike)."""
    from scipy.stats import ks_2samp

    return float(ks_2samp(a, b).statistic)


def truth_ratio_variants(encoder, rows: list[dict], correct: str = "answer") -> tuple[list[dict], list[tuple]] | None:
    """The answer variants a truth ratio needs for `rows`, encoded: each row's perturbed answers, and its
    paraphrased answer when that is the ratio's denominator (`correct`, as the evaluation's). Returns (items,
    owner) with owner[k] = (row index, "correct" | "perturbed"), or None unless every row has perturbed answers."""
    pairs, owner = [], []
    for i, r in enumerate(rows):
        pert = r.get("perturbed_answer")
        pert = [pert] if isinstance(pert, str) else list(pert or [])
        if "question" not in r or not pert or (correct != "answer" and not r.get(correct)):
            return None
        if correct != "answer":
            pairs.append((r["question"], r[correct]))
            owner.append((i, "correct"))
        pairs += [(r["question"], p) for p in pert]
        owner += [(i, "perturbed")] * len(pert)
    return (encoder.qa_many(pairs), owner) if rows else None


def log_truth_ratios(answer_nll: list[tuple[float, int]], variant_nll: list[tuple[float, int]],
                     owner: list[tuple]) -> list[float]:
    """Per row log TR = mean NLL(correct) - mean over perturbed answers of their mean NLL (evaluation.tofu's
    truth_ratio in log space; here the NLLs are the selector's, which count the EOS label and the evaluation's
    do not); `correct` is the row's answer unless a "correct" variant is given."""
    correct = [s / max(n, 1) for s, n in answer_nll]
    pert: dict[int, list[float]] = {}
    for (i, kind), (s, n) in zip(owner, variant_nll):
        if kind == "correct":
            correct[i] = s / max(n, 1)
        else:
            pert.setdefault(i, []).append(s / max(n, 1))
    return [correct[i] - sum(p) / len(p) for i, p in sorted(pert.items())]


GROUP_KEYS = ("person", "author", "subject", "document", "doc_id")


def group_of(row: dict, i: int) -> str:
    """The unit a split keeps together: the first of GROUP_KEYS the row has, else the row itself."""
    for k in GROUP_KEYS:
        if row.get(k) not in (None, ""):
            return f"{k}={row[k]}"
    return f"row={i}"


def split_by_group(rows: list[dict], n_calibration: int, seed: int = 0,
                   avoid: set[str] | None = None) -> tuple[list[int], list[int]]:
    """(calibration, evaluation) row indices: whole groups, in a seeded order, go to calibration until
    it holds >= n_calibration rows; at least one group is left for evaluation when there are two or more.
    Groups holding a question in `avoid` (rows another evaluation reports on) come last; groups made only
    of self-generated probes (`"source": "probe"`, llm_forget/probe.py) come after the user's own rows: a
    probe's answer is the model's own greedy answer, which any update moves first (a retain budget measured
    on them is spent while the user's retain rows have not moved)."""
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault(group_of(r, i), []).append(i)
    avoid = avoid or set()
    order = sorted(groups, key=lambda g: (any(str(rows[i].get("question", "")).strip() in avoid for i in groups[g]),
                                          all(rows[i].get("source") == "probe" for i in groups[g]),
                                          hashlib.sha256(f"{seed}/{g}".encode()).hexdigest()))
    calib: list[int] = []
    for g in order[: max(len(order) - 1, 1)]:
        if len(calib) >= n_calibration:
            break
        calib += groups[g]
    taken = sum(str(rows[i].get("question", "")).strip() in avoid for i in calib)
    if taken:  # the groups did not allow it: say so, the outside evaluation would report on calibrated rows
        logger.warning("select_avoid: %d of the %d calibration rows are rows it lists (too few other groups: "
                       "%d of %d groups hold a listed row); list only the rows that are evaluated elsewhere, or "
                       "lower select_rows", taken, len(calib),
                       sum(any(str(rows[i].get("question", "")).strip() in avoid for i in groups[g]) for g in groups),
                       len(groups))
    keep = set(calib)
    return sorted(calib), [i for i in range(len(rows)) if i not in keep]


def digest(rows: list[dict]) -> str:
    """sha256 of the rows' question/answer/text fields, in order: which rows, without the rows."""
    h = hashlib.sha256()
    for r in rows:
        h.update("\x1f".join(str(r.get(k, "")) for k in ("question", "answer", "text")).encode() + b"\x1e")
    return h.hexdigest()


def calibration_split(forget: list[dict], retain: list[dict] | None, holdout: list[dict] | None,
                      select_rows: int, seed: int = 0, avoid: set[str] | None = None) -> dict:
    """Which rows calibrate (the selector's measurements) and which rows the evaluation reports on.

    holdout: split by group into halves (calibration at most `select_rows` rows); retain: whole groups
    up to `select_rows` rows calibrate and are left out of the evaluation. Forget rows are the training
    target by definition: the selector measures the first `select_rows` of them, and the evaluation
    reports on all of them. `avoid`: questions an outside evaluation reports on (kept out of calibration
    where the groups allow). Returns {"calibration": {set: [indices]}, "evaluation": {set: [indices]}}, and with
    `avoid`, "avoided": {set: number of calibration rows it lists} (0 unless the groups did not allow)."""
    out = {"calibration": {"forget": list(range(min(select_rows, len(forget))))},
           "evaluation": {"forget": list(range(len(forget)))}}
    if retain:
        c, e = split_by_group(retain, min(select_rows, len(retain) // 2), seed, avoid)
        out["calibration"]["retain"], out["evaluation"]["retain"] = c, e
    if holdout:
        c, e = split_by_group(holdout, min(select_rows, len(holdout) // 2), seed, avoid)
        out["calibration"]["holdout"], out["evaluation"]["holdout"] = c, e
    if avoid:
        sets = {"retain": retain, "holdout": holdout}
        out["avoided"] = {k: sum(str(sets[k][i].get("question", "")).strip() in avoid for i in ix)
                          for k, ix in out["calibration"].items() if k in sets}
    return out


def swapped_rows(forget: list[dict], seed: int = 0) -> list[dict]:
    """The forget questions with answers swapped among the forget rows (a seeded derangement): the
    model's perplexity on them is its perplexity on a plausible answer it never saw for that question,
    the reference of "never seen" when there is no holdout. Assumes the forget answers are of one kind
    (exchangeable: a city for a city); see README, "Forgetting to the level of retraining"."""
    order = list(range(len(forget)))
    random.Random(seed).shuffle(order)
    out = [dict(r) for r in forget]
    for k, i in enumerate(order):
        out[i]["answer"] = forget[order[(k + 1) % len(order)]]["answer"]
    return out if len(forget) > 1 else []


class RetainBudgetSelector(TrainerCallback):
    """Keep the most-forgetting state within a retain-perplexity budget (see module docstring).

    reference_items: rows whose perplexity the forget perplexity should reach; `reference` says how
    they are scored: "holdout" (at every measurement, by the model being trained) or "swapped" (once,
    by the starting model). auto_lr: adapt the learning rate (see module docstring)."""

    def __init__(self, forget_items: list[dict], retain_items: list[dict], pad_id: int, budget: float,
                 every: int = 5, patience: int = 2, batch_size: int = 32, holdout_items: list[dict] | None = None,
                 reference: str = "holdout", auto_lr: bool = False, lr_growth: float = 2.0,
                 max_lr_factor: float = 64.0, truth_ratio: tuple | None = None, stall: int = 0,
                 settle: bool = False):
        def batches(items):
            return length_batches(items, pad_id, batch_size)

        self.forget, self.retain = batches(forget_items), batches(retain_items)
        self.holdout = batches(holdout_items) if holdout_items else None
        # ((forget variants, owner), (holdout variants, owner)) from truth_ratio_variants: match both tests
        self.variants = None
        if truth_ratio and self.holdout is not None and reference == "holdout":
            self.variants = [(batches(items), owner) for items, owner in truth_ratio]
        self.target = reference if holdout_items else "max"
        self.budget, self.every, self.patience, self.stall, self.settle = budget, every, patience, stall, settle
        self.auto_lr, self.lr_growth, self.max_lr_factor = auto_lr, lr_growth, max_lr_factor
        self.history: list[dict] = []
        self.best_state = None
        self.best_step = None
        self.best_score = -math.inf
        self.start_retain = None
        self.start_reference = None
        self._over = 0
        self._past = 0
        self._since_best = 0
        self._lr0 = None
        self.seconds = 0.0  # spent measuring (summary: measure_seconds)

    def _trainable(self, model):
        return {k: v.detach().cpu().clone() for k, v in model.named_parameters() if v.requires_grad}

    def _reference(self, model) -> float:
        if self.target == "swapped" and self.start_reference is not None:
            return self.start_reference
        return set_perplexity(model, self.holdout)

    def _match(self, model, rec, fr, hr) -> float:
        """Score (higher = closer to never seen) from the two tests the evaluation uses: D_loss, the KS distance
        between the forget and holdout rows' answer NLLs (membership inference), and D_tr, the KS distance
        between their truth ratios (forget quality); score = -max(D_loss, D_tr). D_tr is skipped when D_loss
        alone rules the state out (it cannot beat the best so far). Sets self._past (forget perplexity above the
        reference's, and the loss test is the one that binds: going on only makes it worse)."""
        d_loss = ks_distance([a / max(n, 1) for a, n in fr], [a / max(n, 1) for a, n in hr])
        rec["ks_loss"] = d_loss
        d_tr = None
        if rec["within_budget"] and d_loss < -self.best_score:
            (fb, fo), (hb, ho) = self.variants
            d_tr = ks_distance(log_truth_ratios(fr, row_nlls(model, fb), fo), log_truth_ratios(hr, row_nlls(model, hb), ho))
            rec["ks_truth_ratio"] = d_tr
        past = rec["forget_perplexity"] > rec["holdout_perplexity"] and (d_tr is None or d_loss >= d_tr)
        self._past = self._past + 1 if past else 0
        return -max(d_loss, d_tr or 0.0)

    def _measure(self, model, step):
        t0 = time.perf_counter()
        fr = row_nlls(model, self.forget)
        f, r = perplexity_of(fr), set_perplexity(model, self.retain)
        if self.start_retain is None:
            self.start_retain = r
        ok = r <= (1 + self.budget) * self.start_retain
        rec = {"step": step, "forget_perplexity": f, "retain_perplexity": r, "within_budget": ok}
        score = f  # higher is better: forget perplexity, or closeness to the reference below
        if self.holdout is not None:  # closeness to the reference of "never seen" (higher = closer)
            hr = row_nlls(model, self.holdout) if self.variants is not None else None  # per row: both tests
            h = perplexity_of(hr) if hr is not None else self._reference(model)
            if self.start_reference is None:
                self.start_reference = h
            rec["holdout_perplexity"] = h
            if hr is not None:
                score = self._match(model, rec, fr, hr)
            else:
                score = -abs(math.log(f / h))
                self._past = self._past + 1 if f > h else 0
        self.history.append(rec)
        if ok and score > self.best_score:
            self.best_score, self.best_step, self.best_state = score, step, self._trainable(model)
            self._since_best = 0
        else:
            self._since_best += 1
        self._over = 0 if ok else self._over + 1
        self.seconds += time.perf_counter() - t0
        return ok

    def _adapt_lr(self, optimizer, lr_scheduler) -> None:
        """Pace the run so that the retain budget would last >= 8 measurement intervals: halve the learning
        rate when an interval used more than 1/8 of the budget, log(1 + b) (or left it); double it while an
        interval closed < 1/64 of the starting log-gap to the reference and used < 1/32 of the budget. With
        `settle` (a loss with a fixed point) it does not double once the forget perplexity is within 1/8 of that
        gap of the reference, where forgetting has arrived, not stalled, nor after an interval whose forget
        perplexity fell: a two-sided loss that moves backwards has rows crossing their targets at this rate, and a
        larger one makes it oscillate."""
        if optimizer is None or len(self.history) < 2 or self.holdout is None:
            return
        prev, cur = self.history[-2], self.history[-1]
        gap = math.log(self.history[0]["holdout_perplexity"] / self.history[0]["forget_perplexity"])
        budget = math.log(1 + self.budget)
        moved = math.log(cur["forget_perplexity"] / prev["forget_perplexity"])
        spent = math.log(cur["retain_perplexity"] / prev["retain_perplexity"])
        # a loss with a fixed point near the reference has arrived, and one moving backwards has rows crossing their
        # targets at this rate: neither is a stall
        hold = self.settle and (math.log(cur["holdout_perplexity"] / cur["forget_perplexity"]) <= gap / 8 or moved < 0)
        factor = 1.0
        if not cur["within_budget"] or spent > budget / 8:
            factor = 1 / self.lr_growth
        elif gap > 0 and moved < gap / 64 and spent < budget / 32 and not hold:
            factor = self.lr_growth
        lrs = [g["lr"] for g in optimizer.param_groups]
        if self._lr0 is None:
            self._lr0 = max(lrs)
        if factor > 1 and max(lrs) * factor > self.max_lr_factor * self._lr0:
            factor = 1.0
        if factor != 1.0:
            for g in optimizer.param_groups:
                g["lr"] *= factor
            if lr_scheduler is not None and hasattr(lr_scheduler, "base_lrs"):
                lr_scheduler.base_lrs = [b * factor for b in lr_scheduler.base_lrs]
        cur["learning_rate"] = max(g["lr"] for g in optimizer.param_groups)

    def _restore(self, model, weights) -> None:
        params = dict(model.named_parameters())
        with torch.no_grad():
            for k, v in weights.items():
                params[k].copy_(v.to(params[k].device))

    def _backtrack(self, model, optimizer) -> None:
        """Take back the interval that ended over budget: weights to the selected state so far, optimizer
        moments cleared (they point along the overshoot). Recorded as `restored_step` on the measurement."""
        if self.best_state is None:
            return
        self._restore(model, self.best_state)
        inner = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps the torch optimizer
        if inner is not None and isinstance(getattr(inner, "state", None), dict):
            inner.state.clear()
        self.history[-1]["restored_step"] = self.best_step

    def on_train_begin(self, args, state, control, model=None, **kw):
        if self.start_retain is None:
            self._measure(model, state.global_step)

    def on_step_end(self, args, state, control, model=None, optimizer=None, lr_scheduler=None, **kw):
        if state.global_step % self.every == 0:
            self._measure(model, state.global_step)
            if self.auto_lr:
                self._adapt_lr(optimizer, lr_scheduler)
                if not self.history[-1]["within_budget"]:
                    self._backtrack(model, optimizer)
            if self._over >= self.patience:
                logger.info("retain perplexity over budget for %d evaluations; stopping at step %d",
                            self._over, state.global_step)
                control.should_training_stop = True
            elif self._past >= self.patience:
                logger.info("forget perplexity above the reference's for %d evaluations; stopping at step %d",
                            self._past, state.global_step)
                control.should_training_stop = True
            elif self.stall and self._since_best >= self.stall:
                logger.info("no state closer to the target for %d evaluations; stopping at step %d",
                            self._since_best, state.global_step)
                control.should_training_stop = True

    def on_train_end(self, args, state, control, model=None, **kw):
        if not self.history or self.history[-1]["step"] != state.global_step:
            self._measure(model, state.global_step)
        if self.best_state is not None:
            self._restore(model, self.best_state)
            best = next(h for h in self.history if h["step"] == self.best_step)
            logger.info("selected step %s: forget perplexity %.3g%s within a retain budget of +%g%%", self.best_step,
                        best["forget_perplexity"], f" (holdout {best['holdout_perplexity']:.3g})"
                        if "holdout_perplexity" in best else "", 100 * self.budget)

    def summary(self) -> dict:
        return {"budget": self.budget, "target": self.target, "selected_step": self.best_step,
                "start_retain_perplexity": self.start_retain, "start_reference_perplexity": self.start_reference,
                "auto_lr": self.auto_lr, "truth_ratio": self.variants is not None,
                "measurements": len(self.history), "measure_seconds": round(self.seconds, 3), "history": self.history}
