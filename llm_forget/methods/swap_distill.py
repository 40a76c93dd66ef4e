"""Name-swap self-distillation: teach the model to answer about a forget subject the way it
answers about a person it never saw.

Teacher for forget row i: the FROZEN starting model on row i with the subject's name replaced by
a fabricated name that occurs in no forget, retain or holdout row (same answer tokens). Student:
the trained model on the original row. With A_i the aligned answer positions,

    L_forget = (1/Σ_i |A_i|) Σ_i Σ_{t ∈ A_i} KL(p_teacher(· | x̃_i, ỹ_<t) ‖ p_θ(· | x_i, y_<t))
    L = γ·L_forget + α·L_retain          (L_retain: retain NLL or KL to the reference, base.retain_term)

`divergence`: forward (above), reverse KL(p_θ ‖ p_teacher), jeffreys (their sum), or hinge:
per answer position max(0, log p_θ(y_t | x_i, y_<t) − log p_teacher(y_t | x̃_i, ỹ_<t)), the true
token pushed down to the teacher's probability of it and no further; tokens already there (the
answer's form, which an unknown person's answer shares) get no gradient, and nothing of the
teacher's own answer is taught. Forward KL weighs each token by the teacher's probability, so a
student that keeps 3x the teacher's probability on a memorised answer token the teacher finds
unlikely pays almost nothing; reverse KL charges that excess mass.

`teacher_names`: fabricated (above), or neighbours: the subject renamed to each of K people of the
retain rows (people the model was trained on, `neighbours` = K, seeded), the teacher the mean of the
K next-token distributions, p_teacher = (1/K) Σ_k p_start(· | x̃_k, ỹ_k,<t): the population's answer
to the question (which values people of this kind have) rather than one guess about an unknown name.
On the tiny model a fabricated name is an unknown token sequence, and the starting model answers it
with one confident value whatever the question (e.g. " C" with p ≈ 0.97 for foods, colours and cities
alike); the neighbour mixture spreads over the values of the relation asked.

Its fixed point is the starting model's "never seen" behaviour, the way a model retrained without
the forget rows answers (generic predictions as in Eldan & Russinovich 2023; self-distillation
as in UNDIAL, Dong et al. 2024).

Alignment: the name is swapped in the question and, where the answer names the subject, in the
answer too (else the teacher would read the real name in its own context and recall its facts).
Positions whose target tokens differ between the two answers (the name's own tokens) are masked
out: there the teacher predicts the fabricated name, which the student should not learn. When the
fabricated name has another number of tokens, the answers' shared tokens are paired by a diff
(`aligned`), so every position outside the name keeps its teacher (a byte-level tokenizer splits
at spaces: the other words tokenise the same). Subjects: the row's `person` field, else the most frequent capitalised multi-word name of
the forget questions (llm_forget.probe.harvest_names) that the question contains; a row whose
question does not name one gets no distillation term (counted in `skipped_rows`). Teacher log-probs
are computed once, up front, for the answer positions only (float16 when float32 would pass
`cache_bytes`; there is no live-teacher fallback for forget sets too large to cache).
"""

from __future__ import annotations

import difflib
import logging
import random
import re
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..kl import kl_rows
from ..errors import UserError
from .base import Method, register, retain_term

logger = logging.getLogger(__name__)

FIRST = ("Alma Bertil Carys Dario Edda Folke Gisela Henrik Idun Jarek Kalina Leif Marit Nuno Oda Piet "
         "Runa Sander Thyra Ugo Valdis Wiebke Yrsa Zoltan").split()
LAST = ("Aakre Birkeland Czerny Dahlgren Eskola Fjeld Grebe Hovland Ingvarsen Jablonski Kvist Lunde "
        "Mikkelsen Nyberg Ostrowski Pauksen Rygg Skaar Tveit Uggla Vesterberg Wojcik").split()
_TEXT_FIELDS = ("question", "answer", "paraphrased_answer", "perturbed_answer", "paraphrased_question",
                "perturbed_paraphrased_answer", "text", "person")


DIVERGENCES = ("forward", "reverse", "jeffreys", "hinge")


def distill_loss(teacher_logp: torch.Tensor, student_logits: torch.Tensor, valid: torch.Tensor,
                 divergence: str = "forward", target: torch.Tensor | None = None) -> torch.Tensor:
    """mean over valid positions of D(p_teacher, p_student); teacher_logp, student_logits: (N, V), valid: (N,).
    forward: KL(p_teacher ‖ p_student); reverse: KL(p_student ‖ p_teacher); jeffreys: their sum;
    hinge: max(0, log p_student(y) − log p_teacher(y)) at the answer token y (`target`, (N,)): the answer
    pushed down to the teacher's probability of it and no further, nothing else taught."""
    d = 0
    if divergence == "hinge":
        s = torch.gather(F.log_softmax(student_logits.float(), -1), 1, target[:, None]).squeeze(1)
        t = torch.gather(F.log_softmax(teacher_logp.float(), -1), 1, target[:, None]).squeeze(1)
        d = F.relu(s - t)
    if divergence in ("forward", "jeffreys"):
        d = d + kl_rows(teacher_logp, student_logits)
    if divergence in ("reverse", "jeffreys"):
        d = d + kl_rows(student_logits, teacher_logp)
    return (d * valid).sum() / valid.sum().clamp(min=1)


def row_text(row: dict) -> str:
    parts = []
    for k in _TEXT_FIELDS:
        v = row.get(k)
        parts += v if isinstance(v, list) else [v] if isinstance(v, str) else []
    return "\n".join(parts)


def find_subjects(rows: list[dict]) -> list[str | None]:
    """Each row's subject: its `person`, else the most frequent recurring capitalised multi-word
    name of the rows' questions that its question contains, else None."""
    if rows and all(r.get("person") for r in rows):
        return [r["person"] for r in rows]
    from ..probe import harvest_names

    names = harvest_names(rows)  # most frequent first, each in >= 2 questions
    return [next((n for n in names if n in r.get("question", "")), None) for r in rows]


def fabricate_names(subjects: list[str], corpus: str, seed: int) -> dict[str, str]:
    """A fabricated name per distinct subject, one word per word of the subject (first parts, then
    last parts, from the fixed lists above), seeded, distinct, none occurring in `corpus`."""
    rng = random.Random(f"swap_distill/{seed}")
    low, used, out = corpus.casefold(), set(), {}
    for s in dict.fromkeys(subjects):
        n = max(1, len(s.split()))
        for _ in range(1000):
            name = " ".join([rng.choice(FIRST)] + [rng.choice(LAST) for _ in range(n - 1)])
            if name not in used and name.casefold() not in low:
                break
        else:
            raise RuntimeError("could not fabricate an unused name")
        used.add(name)
        out[s] = name
    return out


def neighbour_names(rows: list[dict], exclude: set[str]) -> list[str]:
    """The other people the starting model knows: the rows' distinct `person` fields, else the recurring
    capitalised multi-word names of their questions (llm_forget.probe.harvest_names), minus `exclude`."""
    if rows and all(r.get("person") for r in rows):
        names = list(dict.fromkeys(r["person"] for r in rows))
    else:
        from ..probe import harvest_names

        names = harvest_names(rows)
    return [n for n in names if n not in exclude]


def swap(text: str, real: str, fake: str) -> str:
    """The real name replaced by the fake one, then each word of the real name by the fake word at
    its place (a surname alone, a possessive), at word boundaries."""
    text = text.replace(real, fake)
    rw, fw = real.split(), fake.split()
    for r, f in zip(rw, fw) if len(rw) == len(fw) else []:
        text = re.sub(rf"(?<![\w-]){re.escape(r)}(?![\w-])", f, text)
    return text


def aligned(student: list[int], teacher: list[int]) -> list[int | None]:
    """For each student answer position, the teacher answer position it is distilled from, or None:
    the tokens the two answers share (difflib's matching blocks, in order) are paired, the name's
    own tokens are not. Same-length answers that differ only in the name pair position t with t."""
    out: list[int | None] = [None] * len(student)
    for a, b, n in difflib.SequenceMatcher(None, student, teacher, autojunk=False).get_matching_blocks():
        for i in range(n):
            out[a + i] = b + i
    return out


@register("swap_distill")
@dataclass
class SwapDistill(Method):
    """Distil forget answers towards the frozen starting model's answers about a fabricated,
    never-seen name (formula in the module docstring), plus a retain term."""

    gamma: float = 1.0
    alpha: float = 1.0
    retain_loss: str = "nll"
    divergence: str = "forward"
    teacher_names: str = "fabricated"
    neighbours: int = 8
    seed: int = 0
    cache_bytes: int = 1 << 30
    teacher: list = field(default_factory=list, repr=False)  # per forget row: (answer log-probs (n, V), valid (n,))
    skipped_rows: int = 0
    citation = "Eldan & Russinovich, Who's Harry Potter?, 2023; Dong et al., UNDIAL, 2024"

    def reference_needs(self):
        return {"retain_logits"} if self.retain_loss == "kl" else set()

    @torch.no_grad()
    def prepare_teacher(self, model, encoder, forget_rows: list[dict], other_rows: list[dict], pad_id: int,
                        batch_size: int = 16, known_rows: list[dict] | None = None) -> None:
        """Teacher log-probs at every forget answer position, from `model` before any update. `other_rows`: rows
        whose text a fabricated name must avoid; `known_rows` (default `other_rows`): rows about people the model
        was trained on, where neighbours are drawn from (the retain rows: not the holdout's never-seen people)."""
        subjects = [s if s and s in r.get("question", "") else None  # named in the question, or no term
                    for r, s in zip(forget_rows, find_subjects(forget_rows))]
        named = [s for s in subjects if s]
        if self.teacher_names == "neighbours":
            pool = neighbour_names(other_rows if known_rows is None else known_rows, set(named))
            if not pool:
                raise UserError("swap_distill teacher_names: neighbours needs the names of other people in the "
                                 "retain questions (found none); use fabricated")
            picks = random.Random(f"swap_distill/{self.seed}").sample(pool, min(self.neighbours, len(pool)))
            maps = [dict.fromkeys(named, n) for n in picks]
        else:
            corpus = "\n".join(row_text(r) for r in list(forget_rows) + list(other_rows))
            maps = [fabricate_names(named, corpus, self.seed)]
        truncated = encoder.truncated
        student = encoder.rows(forget_rows)
        was_training, device = model.training, next(model.parameters()).device
        model.eval()
        total, count = None, None
        for names in maps:  # the teacher is the mixture (mean probability) over the renamings
            swapped = [{**r, "question": swap(r["question"], s, names[s]), "answer": swap(r["answer"], s, names[s])}
                       if s else r for r, s in zip(forget_rows, subjects)]
            draws = self._teacher_pass(model, encoder.rows(swapped), student, subjects, pad_id, batch_size, device)
            if total is None:
                total, count = [lp.exp() * v[:, None] for lp, v in draws], [v.clone() for _, v in draws]
            else:
                for i, (lp, v) in enumerate(draws):
                    total[i] += lp.exp() * v[:, None]
                    count[i] += v
        encoder.truncated = truncated  # the training rows were counted once already
        self.teacher = [((t / c.clamp(min=1)[:, None]).clamp(min=1e-30).log(), (c > 0).float())
                        for t, c in zip(total, count)]
        self.skipped_rows = sum(not bool(v.any()) for _, v in self.teacher)
        model.train(was_training)
        total = sum(lp.numel() for lp, _ in self.teacher) * 4
        if total > self.cache_bytes:
            self.teacher = [(lp.half(), v) for lp, v in self.teacher]
        masked = sum(int((v == 0).sum()) for _, v in self.teacher)
        logger.info("swap_distill: %d of %d forget rows without a subject or aligned answer (no distillation "
                    "term); %d answer positions masked; %d subjects renamed to %s", self.skipped_rows, len(forget_rows),
                    masked, len(set(named)), f"{len(maps)} neighbours each" if self.teacher_names == "neighbours"
                    else "fabricated names")

    def _teacher_pass(self, model, teacher, student, subjects, pad_id, batch_size, device) -> list[tuple]:
        """Per forget row: (log-probs (n, V) of the teacher rows `teacher` at the student's n answer positions, the
        (n,) mask of positions that have an aligned teacher position)."""
        from ..data.encode import pad

        out = []
        for s0 in range(0, len(teacher), batch_size):
            part = teacher[s0: s0 + batch_size]
            b = {k: v.to(device) for k, v in pad(part, pad_id).items()}
            logp = F.log_softmax(model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.float(), -1)
            for j, item in enumerate(part):
                i = s0 + j
                pos = [t for t in range(len(item["labels"]) - 1) if item["labels"][t + 1] != -100]
                s_ans = [y for y in student[i]["labels"] if y != -100]
                t_ans = [y for y in item["labels"] if y != -100]
                pair = aligned(s_ans, t_ans) if subjects[i] else [None] * len(s_ans)
                pair = [u if u is not None and u < len(pos) else None for u in pair]
                lp = torch.zeros(len(s_ans), logp.shape[-1])
                keep = [t for t, u in enumerate(pair) if u is not None]
                if keep:
                    lp[keep] = logp[j, [pos[pair[t]] for t in keep]].cpu()
                out.append((lp, torch.tensor([u is not None for u in pair], dtype=torch.float32)))
        return out

    def loss(self, b):
        if not self.teacher:
            raise RuntimeError("swap_distill needs prepare_teacher() before training")
        labels = b.forget["labels"]
        mask = labels[:, 1:] != -100
        student = b.forget_logits[:, :-1][mask]  # (N, V), rows in batch order, positions in order
        idx = b.index.tolist()
        dev = student.device
        t_logp = torch.cat([self.teacher[i][0] for i in idx]).to(dev).float()
        valid = torch.cat([self.teacher[i][1] for i in idx]).to(dev)
        f = distill_loss(t_logp, student, valid, self.divergence, labels[:, 1:][mask])
        r = retain_term(b, self.retain_loss)
        return {"loss": self.gamma * f + self.alpha * r, "forget_kl": f, "retain_loss": r}
