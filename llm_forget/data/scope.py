"""Scope forms of the built-in benchmark: each fact asked another way, for evaluation only.

An unlearning request's scope is more than the rows trained on: a fact forgotten from its direct
question ("Where was Ada Brask born?") should also be gone when it is asked

- `paraphrased`: another wording of the same question, same answer
  ("In which city was Ada Brask born?" -> "Lisbon.");
- `reversed`: the relation asked backwards, the person as the answer. One value rarely names one
  person ("Who was born in Lisbon?" has several answers), so the question combines the fact with a
  second fact of the same person, chosen so that **no other person of the benchmark** shares both
  values ("Who was born in Lisbon and plays the harp?" -> "Ada Brask.");
- `one_hop`: a third fact asked about the person named only through two others
  ("What is the favourite food of the person who was born in Lisbon and plays the harp?" -> "Figs.").

`scope_rows(spec)` returns the benchmark's own rows (form `direct`, unchanged) followed by these
forms, for every person. Rows carry `form`, `person`, `split`, `fact` (the fact asked, or for
`reversed` the fact the question is built on) and `via` (the facts naming the person).
Nothing here draws random numbers: the forms are derived from `benchmark.generate(spec)`'s rows
in a fixed order, so the benchmark's rows, splits and tokenizer corpus are untouched (they are
what the zoo's cached models were trained on) and the same spec always gives the same forms.
These rows are never trained on by the zoo's models; they are for `llm_forget.evaluation.scope`.
"""

from __future__ import annotations

from itertools import combinations

from .benchmark import FACTS, BenchmarkSpec, generate

FORMS = ("direct", "paraphrased", "reversed", "one_hop")

PARAPHRASES = {
    "birthplace": "In which city was {name} born?",
    "birth_year": "When was {name} born?",
    "profession": "What is the profession of {name}?",
    "food": "Which dish does {name} like best?",
    "instrument": "What musical instrument is played by {name}?",
    "color": "Which colour does {name} like best?",
}
# "the person who {clause}"
CLAUSES = {
    "birthplace": "was born in {v}",
    "birth_year": "was born in the year {v}",
    "profession": "works as {a} {v}",
    "food": "has {v} as favourite food",
    "instrument": "plays the {v}",
    "color": "has {v} as favourite colour",
}


def _value(row: dict) -> str:
    """The fact's value as it appears in its pool ("lentil soup"), from the answer ("Lentil soup.")."""
    bare = row["answer"][:-1]
    pool = FACTS[row["fact"]][2]
    return next(v for v in pool if v.lower() == bare.lower())


def clause(fact: str, value: str) -> str:
    article = "an" if value[0].lower() in "aeiou" else "a"
    return CLAUSES[fact].format(v=value, a=article)


def unique_pairs(rows: list[dict]) -> dict[str, list[tuple[str, str]]]:
    """Per person, the fact pairs (sorted fact names) whose two values no other person shares."""
    facts: dict[str, dict[str, str]] = {}
    for r in rows:
        facts.setdefault(r["person"], {})[r["fact"]] = _value(r)
    count: dict[tuple, int] = {}
    for f in facts.values():
        for a, b in combinations(sorted(f), 2):
            count[(a, f[a], b, f[b])] = count.get((a, f[a], b, f[b]), 0) + 1
    return {p: [(a, b) for a, b in combinations(sorted(f), 2) if count[(a, f[a], b, f[b])] == 1]
            for p, f in facts.items()}


def scope_rows(spec: BenchmarkSpec = BenchmarkSpec(), forms=FORMS) -> list[dict]:
    """The benchmark's rows (form `direct`) and their paraphrased, reversed and one-hop forms."""
    bad = sorted(set(forms) - set(FORMS))
    if bad:
        raise ValueError(f"unknown scope form(s) {', '.join(bad)}; known: {', '.join(FORMS)}")
    base = generate(spec)
    pairs = unique_pairs(base)
    by_person: dict[str, list[dict]] = {}
    for r in base:
        by_person.setdefault(r["person"], []).append(r)
    out = [{**r, "form": "direct", "via": []} for r in base] if "direct" in forms else []
    for person, rows in by_person.items():
        split = rows[0]["split"]
        value = {r["fact"]: _value(r) for r in rows}
        keep = {"person": person, "split": split}
        if "paraphrased" in forms:
            out += [{"question": PARAPHRASES[r["fact"]].format(name=person), "answer": r["answer"], **keep,
                     "fact": r["fact"], "form": "paraphrased", "via": []} for r in rows]
        if "reversed" in forms:  # each fact, with the first partner fact that makes the answer unique
            for r in rows:
                f = r["fact"]
                partner = next((b if a == f else a for a, b in pairs[person] if f in (a, b)), None)
                if partner is None:
                    continue
                q = f"Who {clause(f, value[f])} and {clause(partner, value[partner])}?"
                out.append({"question": q, "answer": f"{person}.", **keep, "fact": f, "form": "reversed",
                            "via": [f, partner]})
        if "one_hop" in forms:  # each fact, asked of the person named by a unique pair of two other facts
            for r in rows:
                f = r["fact"]
                via = next(((a, b) for a, b in pairs[person] if f not in (a, b)), None)
                if via is None:
                    continue
                who = f"the person who {clause(via[0], value[via[0]])} and {clause(via[1], value[via[1]])}"
                out.append({"question": FACTS[f][0].format(name=who), "answer": r["answer"], **keep, "fact": f,
                            "form": "one_hop", "via": list(via)})
    return out


def answers_of(rows: list[dict], question_rows: list[dict]) -> dict[str, set[str]]:
    """For checking uniqueness: every person of `rows` whose facts satisfy each reversed question's
    two clauses (a question names one person when its set has one element)."""
    facts: dict[str, dict[str, str]] = {}
    for r in rows:
        facts.setdefault(r["person"], {})[r["fact"]] = _value(r)
    out = {}
    for q in question_rows:
        a, b = q["via"]
        want = {a: facts[q["person"]][a], b: facts[q["person"]][b]}
        out[q["question"]] = {p for p, f in facts.items() if all(f.get(k) == v for k, v in want.items())}
    return out
