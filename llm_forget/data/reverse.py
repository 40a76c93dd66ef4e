"""Relations asked backwards: beside each row that asks about a subject, a row that asks for the subject.

A model that has forgotten "Where was Ada Brask born?" -> "Lisbon." may still answer "Who was born in
Lisbon and plays the harp?" -> "Ada Brask.": knowledge learnt in one direction is recalled in that
direction (the reversal curse, Berglund et al. 2023), so unlearning the direct rows leaves the reversed
relation in place (BENCHMARKS.md, "Scope of forgetting"). With `reverse_rows: true` every forget and retain
row that names its subject gets a companion with the relation turned around, added after the given rows:

    question: "{question} {answer} Who is this person?"   (the subject replaced by 'this person' in both)
    answer:   "{subject}."

so unlearning also lowers the name's probability given its facts and the retain set keeps that for the
neighbours. Companions are trained on only: the selection's calibration rows and the run's own evaluation
are the given rows (a companion's cue-then-name form is new to the model, and its perplexity is no measure
of the forgetting asked for). The companion is generic on purpose (cue, then name; no parsing of the
relation), so it applies to any question/answer rows about named subjects. Subject: the row's `person`
(built-in benchmark) or `subject` (probes of a described request), else the most frequent capitalised
multi-word name of the set's questions that the question contains (`llm_forget.probe.harvest_names`); a row
without one gets no companion. Harvested names are capitalised word runs: a place asked about in as many
questions as a person can be taken for one (that row's companion then asks for the place). Companions keep
the row's grouping fields (person, author, subject, ...) and drop the answer-specific ones (paraphrased /
perturbed answers).

`reverse_rows: auto` (the default) adds the companions only where the model links facts to names backwards:
`reverse_contrast` measures how much more likely each forget subject's name is after its own facts than after
8 other subjects' (the name's prior cancels out), with its standard error over companions. The companions are
trained on when the contrast is at least `MIN_CONTRAST` (0.1 nats per name token) and at least `Z_SE` (1.645)
standard errors above 0, a one-sided test at 5 % (`links_backwards`). A model that learnt its facts in one
direction gives a contrast within its noise: the zoo's tiny-target built from seeds 0-3 on an AMD EPYC measures
-0.10, -0.02, +0.03, +0.04 (-1.2 to +0.9 standard errors); the same tiny base fine-tuned on every form of the facts
measures 0.35 and 0.33 (2.4 and 2.3 standard errors; BENCHMARKS.md, "Scope by default: reverse_rows auto"). The
threshold alone, with 3 other subjects per companion (before), took the seed-1 build's 0.127 +- 0.102, noise, for a
link: trained on relations it does not hold, kl there forgot nothing within its retain budget (forget perplexity
1.09 -> 1.20) and the run took twice the steps. Training on a relation the model does not hold spends the retain
budget for nothing (on tiny-target the companions halved the forgetting of the direct rows). It assumes the
companions' generic wording reaches the model's backward knowledge: a model that recalls names only from one fixed
phrasing of the reversed question may score under the test (`reverse_rows: true` forces them).

A companion is longer than its row and ends with the name it asks for, so one over `max_length` is left out
(`fitting`) whatever `overlong` says: truncating it would cut the name, and rows the user never wrote must not
stop a run whose given rows fit.
"""

from __future__ import annotations

KEEP = ("person", "author", "subject", "document", "doc_id", "split", "fact")
PLACEHOLDER = "this person"
MIN_CONTRAST = 0.1  # nats per name token (module docstring)
Z_SE = 1.645  # standard errors above 0 the contrast must also be: a one-sided test at 5 % (module docstring)


def subject_of(row: dict, names: list[str]) -> str | None:
    q = row.get("question")
    if not isinstance(q, str):
        return None
    for s in (row.get("person"), row.get("subject"), *names):
        if isinstance(s, str) and s and s in q:
            return s
    return None


def companion(row: dict, subject: str) -> dict:
    """The row's relation asked backwards (module docstring)."""
    q = row["question"].replace(subject, PLACEHOLDER).strip()
    a = str(row["answer"]).replace(subject, PLACEHOLDER).strip()  # the name only ever as the answer
    return {**{k: row[k] for k in KEEP if k in row}, "question": f"{q} {a} Who is {PLACEHOLDER}?",
            "answer": f"{subject}.", "source": "reversed"}


def with_reversed(rows: list[dict] | None) -> list[dict] | None:
    """`rows`, unchanged and first, then the companion of each row that names its subject, in row order."""
    if not rows:
        return rows
    from ..probe import harvest_names

    names = None
    out = list(rows)
    for r in rows:
        if not isinstance(r.get("answer"), str):
            continue
        s = subject_of(r, [])
        if s is None:
            names = harvest_names(rows) if names is None else names
            s = subject_of(r, names)
        if s is not None:
            out.append(companion(r, s))
    return out


def fitting(encoder, rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """The `rows` (companions) whose encoding fits `encoder.max_length`, and those encodings, in order; the
    others are left out, never truncated (module docstring). `encoder` itself is not touched."""
    enc = _unbounded(encoder).rows(rows)
    keep = [i for i, e in enumerate(enc) if len(e["input_ids"]) <= encoder.max_length]
    return [rows[i] for i in keep], [enc[i] for i in keep]


def _unbounded(encoder):
    from dataclasses import replace

    return replace(encoder, max_length=2**31, truncated=0)


def reverse_contrast(model, encoder, companions: list[dict], pad_id: int, others: int = 8, max_rows: int = 64,
                     seed: int = 0, batch_size: int = 8) -> dict:
    """Does the model name a subject from its facts? For (up to `max_rows` of) the `companions` c_i (the rows
    `with_reversed` adds after the given ones), with subject s_i, and for `others` companions c_j of other
    subjects each (drawn with `seed`):

        contrast = mean over (i, j) of [NLL(s_i | c_j) - NLL(s_i | c_i)] / tokens(s_i)

    in nats per name token: how much more likely the name is after its own facts than after someone else's.
    The name's own prior cancels, so a model that never links facts to the name backwards gives ~0.
    Sequences over `encoder.max_length` tokens are left out (`fitting`).
    Returns {"companions": n, "contrast": float or None (fewer than two subjects), "se": its standard error over
    companions (None under two)}."""
    import random

    from ..selection import length_batches, row_nlls

    comp = companions[:max_rows]
    rng = random.Random(seed)
    pairs, own = [], []
    for i, c in enumerate(comp):
        alt = [j for j, d in enumerate(comp) if d["answer"] != c["answer"]]
        for j in rng.sample(alt, min(others, len(alt))):
            pairs.append((comp[j]["question"], c["answer"]))
            own.append(i)
    if not pairs:
        return {"companions": len(comp), "contrast": None}
    qa = [(c["question"], c["answer"]) for c in comp] + pairs
    enc = _unbounded(encoder).qa_many(qa)
    fits = [k for k, e in enumerate(enc) if len(e["input_ids"]) <= encoder.max_length]
    nll = dict(zip(fits, row_nlls(model, length_batches([enc[k] for k in fits], pad_id, batch_size)))) \
        if fits else {}
    by_row: dict[int, list[float]] = {}
    for k, i in enumerate(own):
        if len(comp) + k in nll and i in nll:
            by_row.setdefault(i, []).append((nll[len(comp) + k][0] - nll[i][0]) / max(nll[i][1], 1))
    diffs = [d for ds in by_row.values() for d in ds]
    if not diffs:
        return {"companions": len(comp), "contrast": None}
    return {"companions": len(comp), "contrast": sum(diffs) / len(diffs), "se": _standard_error(by_row)}


def _standard_error(by_row: dict[int, list[float]]) -> float | None:
    """Standard error of the contrast over companions: sd(m_i) / sqrt(n), m_i the mean of companion i's differences
    (a companion's pairs share its own NLL, so the companion is the independent unit). None under two companions."""
    import statistics

    means = [statistics.fmean(ds) for ds in by_row.values()]
    return statistics.stdev(means) / len(means) ** 0.5 if len(means) >= 2 else None


def links_backwards(measured: dict) -> bool:
    """The `reverse_rows: auto` decision on `reverse_contrast`'s result: the contrast is at least MIN_CONTRAST and
    at least Z_SE standard errors above 0 (a contrast within the noise of the companions measured is no link)."""
    c, se = measured.get("contrast"), measured.get("se")
    return c is not None and se is not None and c >= MIN_CONTRAST and c >= Z_SE * se
