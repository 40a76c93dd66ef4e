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
"""

from __future__ import annotations

KEEP = ("person", "author", "subject", "document", "doc_id", "split", "fact")
PLACEHOLDER = "this person"


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
