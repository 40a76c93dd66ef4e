"""Build a forget set from a description: ask the model what it knows about a name, and what it knows
about its neighbours, offline, with the model at hand.

A described request (`{"kind": "concept", "description": "Basil Mahfouz Al-Kuwaiti"}`, optionally with
a few `examples` rows and `neighbours` names; llm_forget/requests.py) has no forget rows. `build_probes`
makes them:

1. **Question templates** with a `{name}` slot, in this order, duplicates dropped, at most `max_templates`:
   the few-shot examples' questions with the description replaced by `{name}`; the user's retain
   questions with a neighbour's name replaced by `{name}` (how people are asked about in this data; the
   templates shared by most neighbours first); then `GENERIC`, biographical questions about anyone.
2. **Neighbours**, other names of the same kind, so that only the named one is removed: the request's
   `neighbours` list; else the retain rows' `person` field when they have one; else names harvested
   from the retain questions (`harvest_names`: runs of two or more capitalised words, leading question
   words and a possessive 's dropped, that occur in at least two rows: this assumes names are written capitalised and
   that each neighbour is asked about more than once). Anything equal to, containing, or contained in
   the description is never a neighbour. At most `n_neighbours`, most often named first.
3. **Answers**: the model's own greedy answer to each template filled with the description (forget
   probes) and with each neighbour (retain probes), cut at the first newline. A forget probe whose
   answer is also the model's answer for at least half of the neighbours on the same template is
   dropped: that answer is what the model says about anyone, not knowledge of this name, and
   unlearning it would damage the neighbours.
4. **Grounded templates only**: a template is kept when, for at least half of the neighbours the retain
   rows say something about, the model's answer about that neighbour is *grounded* in those rows: its
   words (3+ characters, the neighbour's own name left out) overlap that neighbour's answers in the data
   more than, on average, the other neighbours' answers (`grounded`). A template the model answers
   with confident inventions (a tiny model asked "What is the nationality of X?" answers "Crimson.")
   yields no knowledge to remove: its forget probes would soak up the forgetting (an ascent lifts their
   loss first) while the facts stay. Its probes, forget and retain, go to `dropped`. Skipped when no
   neighbour has rows (neighbours named in the request, no retain set).

A request may name several (`"description": [NAME, ...]`): each is probed with the same templates, none is
a neighbour of another, and every one must come back with forget rows.

Forget set = the kept forget probes + the few-shot examples; the retain probes join the recipe's retain
set (the model's current answers about neighbours are what must stay). Every probe is written to the
run folder as probes.jsonl (role, subject, template, question, answer) and its sha256 goes to
results.json; the rows unlearned are hashed into the ledger like any forget rows.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

GENERIC = [
    "Who is {name}?", "What is {name} known for?", "Where was {name} born?", "When was {name} born?",
    "What does {name} do for a living?", "What is the profession of {name}?", "Where does {name} live?",
    "What is the nationality of {name}?", "Who are the parents of {name}?", "What has {name} written?",
    "What genre does {name} write in?", "Which awards has {name} received?", "What are the hobbies of {name}?",
    "What is the favourite food of {name}?", "What is the favourite colour of {name}?",
    "Which instrument does {name} play?", "What is {name}'s most famous work?", "Tell me about {name}.",
]
QUESTION_WORDS = {"What", "Who", "Whom", "Whose", "Where", "When", "Which", "Why", "How", "Is", "Are", "Was",
                  "Were", "Does", "Did", "Do", "Has", "Have", "Can", "Could", "In", "On", "At", "Tell", "The", "A",
                  "An", "Of", "For", "From", "As", "By", "With", "Name", "Describe", "Give", "List"}
_CAP = re.compile(r"[A-Z][\w'\-]*(?:\s+(?:[A-Z][\w'\-]*|(?:al|el|de|da|van|von|bin|ibn|del|la|le)))*")


@dataclass
class Probes:
    forget: list[dict] = field(default_factory=list)    # rows to unlearn (probes kept + examples)
    retain: list[dict] = field(default_factory=list)    # neighbour probes: the model's answers to keep
    dropped: list[dict] = field(default_factory=list)   # forget probes whose answer is generic
    neighbours: list[str] = field(default_factory=list)
    templates: list[str] = field(default_factory=list)

    def records(self) -> list[dict]:
        """Every probe, as written to probes.jsonl."""
        return ([{"role": "forget", **r} for r in self.forget] + [{"role": "retain", **r} for r in self.retain]
                + [{"role": "dropped", **r} for r in self.dropped])


def _related(a: str, b: str) -> bool:
    a, b = a.casefold(), b.casefold()
    return a in b or b in a


def harvest_names(rows: list[dict], min_rows: int = 2) -> list[str]:
    """Capitalised multi-word names in the rows' questions, most frequent first (see module docstring)."""
    seen: Counter = Counter()
    for r in rows:
        found = set()
        for m in _CAP.finditer(r.get("question", "")):
            words = m.group(0).split()
            while words and words[0] in QUESTION_WORDS:
                words = words[1:]
            if words:
                words[-1] = re.sub(r"'s?$", "", words[-1])  # "Nikolai Abilov's" -> "Nikolai Abilov"
            if len(words) >= 2 and words[-1][:1].isupper():
                found.add(" ".join(words))
        seen.update(found)
    return [n for n, c in sorted(seen.items(), key=lambda x: -x[1]) if c >= min_rows]


def _words(text: str, leave_out: set[str] = frozenset()) -> set[str]:
    return {w for w in re.findall(r"\w+", text.casefold()) if len(w) >= 3 and w not in leave_out}


def grounded(answer: str, subject: str, facts: dict[str, str]) -> bool:
    """Whether `answer` (the model's, about `subject`) is found in what the data says about the subject,
    `facts[subject]`, more than in what it says about the others (the mean word overlap with their facts):
    |W(a) ∩ W(facts[s])| > mean over o ≠ s of |W(a) ∩ W(facts[o])|, W = words of 3+ characters, the
    subject's name left out."""
    w = _words(answer, _words(subject))
    others = [o for o in facts if o != subject]
    if not w or subject not in facts or not others:
        return False
    own = len(w & _words(facts[subject]))
    return own > sum(len(w & _words(facts[o])) for o in others) / len(others)


def facts_of(names: list[str], retain_rows: list[dict] | None) -> dict[str, str]:
    """Each neighbour's answers in the retain rows (rows whose `person` is the name, else whose question
    names it), joined; neighbours without rows are left out."""
    out: dict[str, list[str]] = {}
    for r in retain_rows or []:
        for nb in names:
            if r.get("person") == nb or ("person" not in r and nb in r.get("question", "")):
                out.setdefault(nb, []).append(str(r.get("answer", "")))
    return {k: " ".join(v) for k, v in out.items()}


def _as_list(description: str | list[str]) -> list[str]:
    return [description] if isinstance(description, str) else list(description)


def neighbours_of(description: str | list[str], given: list[str] | None, retain_rows: list[dict] | None,
                  n: int) -> list[str]:
    described = _as_list(description)
    if given:
        names = list(given)
    elif retain_rows and all("person" in r for r in retain_rows):
        names = [p for p, _ in Counter(r["person"] for r in retain_rows).most_common()]
    else:
        names = harvest_names(retain_rows or [])
    return [x for x in dict.fromkeys(names) if x.strip() and not any(_related(x, d) for d in described)][:n]


def templates_of(description: str | list[str], examples: list[dict] | None, retain_rows: list[dict] | None,
                 neighbours: list[str], limit: int) -> list[str]:
    out = [r["question"].replace(d, "{name}") for r in examples or [] for d in _as_list(description)
           if d in r.get("question", "")]
    counts: Counter = Counter()
    for r in retain_rows or []:
        q = r.get("question", "")
        for nb in neighbours:
            if nb in q:
                counts[q.replace(nb, "{name}")] += 1
                break
    out += [t for t, _ in counts.most_common()]
    out += GENERIC
    return [t for t in dict.fromkeys(out) if "{name}" in t and "{" not in t.replace("{name}", "")][:limit]


def build_probes(model, tokenizer, encoder, description: str | list[str], examples: list[dict] | None = None,
                 neighbours: list[str] | None = None, retain_rows: list[dict] | None = None,
                 max_templates: int = 32, n_neighbours: int = 8, max_new_tokens: int = 48,
                 batch_size: int = 32) -> Probes:
    """Forget probes about `description` (a name, or a list of names probed alike) and retain probes about
    their neighbours (module docstring)."""
    from .errors import UserError
    from .evaluation.generation import greedy

    described = _as_list(description)
    names = neighbours_of(described, neighbours, retain_rows, n_neighbours)
    templates = templates_of(described, examples, retain_rows, names, max_templates)
    subjects = described + names
    qs = [(s, t, t.format(name=s)) for s in subjects for t in templates]
    prompts = encoder.prompt_ids_many([q for _, _, q in qs])
    answers = greedy(model, tokenizer, prompts, [max_new_tokens] * len(prompts), batch_size=batch_size,
                     stop_strings=["\n"])
    by = {(s, t): a for (s, t, _), a in zip(qs, answers)}
    facts = facts_of(names, retain_rows)  # what the data says about each neighbour: the grounding check
    kept = {t for t in templates if len(facts) < 2
            or sum(grounded(by[(nb, t)], nb, facts) for nb in facts) * 2 >= len(facts)}
    p = Probes(neighbours=names, templates=[t for t in templates if t in kept])
    for s, t, q in qs:
        a = by[(s, t)]
        if not a:
            continue
        row = {"question": q, "answer": a, "subject": s, "template": t, "source": "probe"}
        if t not in kept:
            p.dropped.append({**row, "why": "ungrounded template"})
        elif s not in described:
            p.retain.append(row)
        elif names and sum(by[(nb, t)] == a for nb in names) * 2 >= len(names):
            p.dropped.append({**row, "why": "generic answer"})
        else:
            p.forget.append(row)
    p.forget += [{**r, "subject": next((d for d in described if d in r["question"] + r["answer"]), described[0]),
                  "source": "example"} for r in examples or []]
    missing = [d for d in described if not any(r["subject"] == d for r in p.forget)]
    if missing:  # a name left without rows would quietly not be forgotten
        raise UserError(f"probing found nothing the model knows about {missing[0]!r} (every answer was one it "
                        "also gives about the neighbours, or a template that draws no grounded answer about them); "
                        "give a few example rows (few-shot) or other neighbours")
    return p


def probe_request(request, model_path: str, cfg, tokenizer, encoder, retain_rows: list[dict] | None) -> Probes:
    """build_probes for a described request (llm_forget/requests.py), with the model loaded from
    `model_path` for the purpose (in eval mode, then freed): what `llm_forget.api.unlearn` calls."""
    import logging

    import torch

    from .models import load_model, measure_device

    model = load_model(model_path, cfg.dtype, cfg.trust_remote_code, cfg.allow_pickle, device=measure_device(cfg))
    with torch.no_grad():
        p = build_probes(model, tokenizer, encoder, request.description, request.examples, request.neighbours,
                         retain_rows, max_templates=cfg.probe_templates, n_neighbours=cfg.probe_neighbours,
                         batch_size=cfg.per_device_eval_batch_size)
    del model
    logging.getLogger(__name__).info("probes for %r: %d forget rows (%d dropped as generic), %d neighbour rows "
                                     "about %d neighbours, %d templates", request.description, len(p.forget),
                                     len(p.dropped), len(p.retain), len(p.neighbours), len(p.templates))
    return p


def summary(p: Probes, text: str) -> dict:
    """What results.json records of the probes: counts and the file's hash (never the text, nor a
    plain hash of the description: a name is easy to guess; the ledger keeps a keyed fingerprint)."""
    import hashlib

    return {"file": "probes.jsonl", "sha256": hashlib.sha256(text.encode()).hexdigest(),
            "forget": len(p.forget), "retain": len(p.retain), "dropped": len(p.dropped),
            "examples": sum(r.get("source") == "example" for r in p.forget), "neighbours": len(p.neighbours),
            "templates": len(p.templates)}


def jsonl(p: Probes) -> str:
    import json

    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in p.records())
