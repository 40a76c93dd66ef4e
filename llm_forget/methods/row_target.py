"""Per-row never-seen targets: move each forget row's answer to its own "never seen" level, and keep
other people's answers to the same question where they were.

A model retrained without the forget set is not equally unsure of every forget answer: answers it can
guess from what it knows about everyone else stay likely, the rest do not (BENCHMARKS.md, "How forgetting
spreads over the forget rows"). Gradient ascent moves the rows unevenly the other way (a memorised row's
gradient vanishes as p → 1, so a tenth of the rows stay memorised while others overshoot), and a hinge at
one teacher moves them all into one band. Here every forget row i gets its own target answer NLL τ_i:

    h_(1) ≤ … ≤ h_(m)   the starting model's mean answer NLLs on never-seen rows (the holdout's calibration
                        rows: people the model was never trained on; without a holdout, the forget
                        questions with answers swapped among them)
    r_i                 rank of row i (0-based, ties by order) by a guessability predictor g_i: the
                        neighbour-mixture teacher's NLL of its answer (swap_distill, teacher_names
                        neighbours: the subject renamed to K people of the retain rows), else a seeded
                        random order
    τ_i = Q_h((r_i + ½) / n)   the (r_i + ½)/n quantile of h (numpy's linear interpolation)

so the targets have the never-seen rows' spread and the most guessable answers get the lowest ones. With
ℓ_i the row's mean answer NLL under θ and the alternatives of row i (other people's answers to the same
question: retain rows whose question is row i's with the subject renamed), each with its NLL a_ik⁰ under
the starting model,

    L_forget = (1/B) Σ_i |log max(ℓ_i, ε) − log τ_i|          two-sided: a fixed point at τ, no overshoot
    L_anchor = (1/B') Σ_i max(0, ℓ(alt_ik) − a_ik⁰)            one alternative per row and epoch (seeded)
    L = γ·L_forget + α·L_retain + anchor·L_anchor

The log makes the gradient of a memorised row (ℓ → 0, ∇ℓ ∝ 1 − p → 0) as large as any other's (∇ log ℓ =
∇ℓ / ℓ). The anchor keeps the mass that leaves the true answer from leaving the question's other plausible
answers too: a retrained model prefers the true answer to a perturbed one no more than to any other value
(truth ratio ≈ 1), while ascent alone lowers every answer of the relation. Without alternatives (no
parallel questions in the retain rows) the anchor term is absent.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import UserError
from .base import Method, register, retain_term, sequence_logp

logger = logging.getLogger(__name__)


def row_target_loss(ell: torch.Tensor, tau: torch.Tensor, floor: float = 1e-3) -> torch.Tensor:
    """(1/B) Σ_i |log max(ℓ_i, ε) − log τ_i| for rows' mean answer NLLs ℓ (B,) and targets τ (B,)."""
    return (ell.clamp(min=floor).log() - tau.log()).abs().mean()


def anchor_loss(ell_alt: torch.Tensor, ell_alt0: torch.Tensor) -> torch.Tensor:
    """(1/B') Σ_i max(0, ℓ_alt,i − ℓ⁰_alt,i): alternatives' mean answer NLLs kept at or below their start."""
    return torch.relu(ell_alt - ell_alt0).mean()


def assign_targets(reference: list[float], predictor: list[float]) -> list[float]:
    """τ_i = the (r_i + ½)/n quantile of `reference` (linear interpolation), r_i the 0-based rank of
    predictor[i] among the n predictors (ties by position)."""
    rank = np.argsort(np.argsort(np.asarray(predictor, dtype=float), kind="stable"), kind="stable")
    h = np.sort(np.asarray(reference, dtype=float))
    return [float(np.quantile(h, (r + 0.5) / len(predictor))) for r in rank]


def alternative_answers(forget_rows: list[dict], subjects: list[str | None], known_rows: list[dict],
                        limit: int) -> list[list[str]]:
    """Per forget row: up to `limit` answers (sorted, distinct, not its own) of known rows whose question is
    the row's question with its subject renamed to another known person."""
    from .swap_distill import neighbour_names, swap

    by_question: dict[str, set[str]] = {}
    for r in known_rows:
        if isinstance(r.get("question"), str) and isinstance(r.get("answer"), str):
            by_question.setdefault(r["question"], set()).add(r["answer"])
    people = neighbour_names(known_rows, {s for s in subjects if s})
    out = []
    for r, s in zip(forget_rows, subjects):
        found = set()
        for p in people if s else []:
            found |= by_question.get(swap(r["question"], s, p), set())
        out.append(sorted(found - {r.get("answer")})[:limit])
    return out


@register("row_target")
@dataclass
class RowTarget(Method):
    """Each forget row moved to its own never-seen answer NLL, other people's answers to its question kept
    (formula in the module docstring), plus a retain term."""

    gamma: float = 1.0
    alpha: float = 10.0
    retain_loss: str = "kl"
    anchor: float = 1.0
    neighbours: int = 32
    seed: int = 0
    floor: float = 1e-3
    targets: list = field(default_factory=list, repr=False)  # τ_i per forget row
    alternatives: list = field(default_factory=list, repr=False)  # per forget row: [(encoded item, a⁰), ...]
    fixed_point = True
    citation = "llm_forget (per-row targets); Eldan & Russinovich 2023 and Dong et al. 2024 for the teacher"

    def reference_needs(self):
        return {"retain_logits"} if self.retain_loss == "kl" else set()

    @torch.no_grad()
    def prepare_targets(self, model, encoder, forget_rows: list[dict], never_seen_rows: list[dict],
                        known_rows: list[dict], pad_id: int, batch_size: int = 16) -> None:
        """τ_i and the alternatives with their starting NLLs, from `model` before any update."""
        from ..selection import length_batches, row_nlls
        from .swap_distill import SwapDistill, find_subjects

        if not never_seen_rows:
            raise UserError("row_target needs never-seen rows: a holdout, or at least 2 forget rows to swap answers "
                            "among")
        truncated = encoder.truncated

        def mean_nlls(items):
            return [s / max(k, 1) for s, k in row_nlls(model, length_batches(items, pad_id, batch_size))]

        h = mean_nlls(encoder.rows(never_seen_rows))
        subjects = find_subjects(forget_rows)
        try:
            teacher = SwapDistill(teacher_names="neighbours", neighbours=self.neighbours, seed=self.seed)
            teacher.prepare_teacher(model, encoder, forget_rows, known_rows, pad_id, batch_size, known_rows=known_rows)
            g = []
            for item, (lp, v) in zip(encoder.rows(forget_rows), teacher.teacher):
                y = torch.tensor([t for t in item["labels"] if t != -100])
                tok = -lp.float().gather(1, y[:, None]).squeeze(1)
                g.append(float((tok * v).sum() / v.sum()) if v.any() else None)
            known = [x for x in g if x is not None]
            g = [x if x is not None else float(np.median(known)) if known else 0.0 for x in g]
            order = "neighbour teacher"
        except UserError:  # no other people in the retain rows
            rng = random.Random(f"row_target/{self.seed}")
            g, order = [rng.random() for _ in forget_rows], "seeded random"
        self.targets = assign_targets(h, g)
        alt = alternative_answers(forget_rows, subjects, known_rows, self.neighbours)
        flat = [(i, {**forget_rows[i], "answer": a}) for i, answers in enumerate(alt) for a in answers]
        items = encoder.rows([r for _, r in flat]) if flat else []
        self.alternatives = [[] for _ in forget_rows]
        for (i, _), item, v in zip(flat, items, mean_nlls(items) if items else []):
            self.alternatives[i].append((item, v))
        encoder.truncated = truncated  # scoring rows, not training on them
        logger.info("row_target: targets from %d never-seen rows (answer NLL q10/50/90 %.2f/%.2f/%.2f), ordered by "
                    "the %s; %d of %d forget rows with alternatives (%d answers)", len(h), *np.quantile(h, [.1, .5, .9]),
                    order, sum(bool(a) for a in self.alternatives), len(forget_rows), len(flat))

    def loss(self, b):
        if not self.targets:
            raise RuntimeError("row_target needs prepare_targets() before training")
        lp, n = sequence_logp(b.forget_logits, b.forget["labels"])
        ell = -lp / n.clamp(min=1)
        tau = torch.tensor([self.targets[i] for i in b.index.tolist()], device=ell.device, dtype=ell.dtype)
        f = row_target_loss(ell, tau, self.floor)
        r = retain_term(b, self.retain_loss)
        a = torch.zeros((), device=ell.device)
        if b.alt is not None:
            alp, an = sequence_logp(b.alt_logits, b.alt["labels"])
            a = anchor_loss(-alp / an.clamp(min=1), b.alt["ref_nll"].to(ell.dtype))
        return {"loss": self.gamma * f + self.alpha * r + self.anchor * a, "forget_gap": f, "retain_loss": r,
                "anchor": a}
