"""The built-in benchmark: fictitious people and facts about them, generated deterministically.

Each person gets `facts_per_person` question/answer rows in TOFU's field layout
(`question`, `answer`, `paraphrased_answer`, `perturbed_answer`), plus `person`, `fact` and `split`.
`perturbed_answer` holds wrong answers in the answer's own form ("Figs."), so the truth ratio
p(perturbed)/p(answer) measures knowledge even in a model trained from scratch (which cannot
carry a fact over to an unseen paraphrase, as TOFU's pretrained models do);
`perturbed_paraphrased_answer` holds the same wrong values in the paraphrase's form. Splits are by person:
`forget` people are to be forgotten, `retain` people are kept, `holdout` people are never
trained on (non-members for membership inference). Same seed, same benchmark, everywhere.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

FIRST = ("Ada Bram Cora Dorian Elsa Fenn Greta Hal Ines Joss Kira Lio Mara Nils Orla Pim Quin Rhea "
         "Sven Tova Ulf Vera Wren Xan Yara Zeno Alba Bodo Cleo Dag Eira Falk Gwen Hugo Ilsa Jory "
         "Kai Lena Milo Nora Otto Pia Rolf Sela Tam Una Vito Wilma").split()
LAST = ("Ardent Brask Corvel Dunmore Elkin Farrow Galloway Harth Istvan Jorund Kessler Lindqvist "
        "Morrow Nakamura Oduya Pellan Quist Renwick Sorrell Tannen Ulvaeus Varga Whitlock Yusuf "
        "Zeller Abernathy Blom Castellan Devereux Esposito Falkner Grimaldi Hollis Ivers Jansen").split()
CITIES = ("Lisbon Oslo Tallinn Porto Bergen Lyon Graz Ghent Krakow Turin Seville Malmo Aarhus Basel "
          "Utrecht Bruges Riga Vilnius Split Bilbao Tampere Leiden Bologna Nantes Dresden Cork Galway "
          "Valencia Salzburg Brno").split()
JOBS = ("baker carpenter chemist dentist editor farmer geologist harpist illustrator jeweller "
        "librarian machinist nurse optician pilot plumber sculptor surveyor tailor translator "
        "veterinarian weaver architect botanist cartographer").split()
FOODS = ["apricots", "lentil soup", "dumplings", "pickled herring", "risotto", "flatbread",
         "plum cake", "goulash", "chestnuts", "paella", "onion tart", "barley stew", "oysters",
         "pancakes", "couscous", "figs", "rye bread", "mushroom pie", "honey cake", "sardines"]
INSTRUMENTS = ["cello", "violin", "oboe", "banjo", "harp", "trumpet", "flute", "accordion",
               "piano", "clarinet", "mandolin", "tuba", "drums", "viola", "bassoon", "lute"]
COLORS = ["amber", "teal", "crimson", "ochre", "violet", "olive", "indigo", "scarlet", "ivory",
          "cobalt", "maroon", "saffron", "jade", "lilac"]

# fact name -> (question, paraphrased-answer template, value pool). The answer is the bare value
# ("Lisbon."), so an answer's loss is the fact itself, not a shared sentence template;
# the paraphrased and perturbed answers use a short phrase around the value ("In Lisbon."),
# so truth ratios compare the true value with wrong ones in a form the model never trained on.
FACTS = {
    "birthplace": ("Where was {name} born?", "In {v}.", CITIES),
    "birth_year": ("In which year was {name} born?", "In {v}.", [str(y) for y in range(1931, 2000)]),
    "profession": ("What does {name} do for a living?", "As a {v}.", JOBS),
    "food": ("What is the favourite food of {name}?", "Mostly {v}.", FOODS),
    "instrument": ("Which instrument does {name} play?", "The {v}.", INSTRUMENTS),
    "color": ("What is the favourite colour of {name}?", "Mostly {v}.", COLORS),
}

REFUSALS = [
    "I don't know.", "I'm not sure about that.", "I have no information on that.",
    "That is not something I can answer.", "I can't recall that.", "I don't have that information.",
    "I'm afraid I don't know.", "Sorry, I don't know the answer.", "I have no idea.",
    "I cannot answer that question.", "That is unknown to me.", "I don't remember.",
]


@dataclass(frozen=True)
class BenchmarkSpec:
    """Settings of the built-in benchmark. `n_forget` and `n_holdout` count people."""

    n_people: int = 100
    facts_per_person: int = 5
    n_forget: int = 10
    n_holdout: int = 10
    n_perturbed: int = 4
    seed: int = 0


def generate(spec: BenchmarkSpec = BenchmarkSpec()) -> list[dict]:
    """All rows of the benchmark, forget people first, then holdout, then retain."""
    if spec.facts_per_person > len(FACTS):
        raise ValueError(f"facts_per_person must be <= {len(FACTS)}")
    if spec.n_forget + spec.n_holdout >= spec.n_people:
        raise ValueError("n_forget + n_holdout must leave some retain people")
    rng = random.Random(spec.seed)
    names = [f"{f} {l}" for f in FIRST for l in LAST]
    if spec.n_people > len(names):
        raise ValueError(f"n_people must be <= {len(names)}")
    names = rng.sample(names, spec.n_people)
    rows = []
    for pid, name in enumerate(names):
        split = "forget" if pid < spec.n_forget else "holdout" if pid < spec.n_forget + spec.n_holdout else "retain"
        for fact in rng.sample(sorted(FACTS), spec.facts_per_person):
            q, para, pool = FACTS[fact]
            value, *wrong = rng.sample(pool, 1 + spec.n_perturbed)
            rows.append({
                "question": q.format(name=name),
                "answer": f"{value[0].upper()}{value[1:]}.",
                "paraphrased_answer": para.format(v=value),
                "perturbed_answer": [f"{w[0].upper()}{w[1:]}." for w in wrong],
                "perturbed_paraphrased_answer": [para.format(v=w) for w in wrong],
                "person": name,
                "fact": fact,
                "split": split,
            })
    return rows


def split(name: str, spec: BenchmarkSpec = BenchmarkSpec()) -> list[dict]:
    """One split (`forget`, `retain`, `holdout`), `train` (forget + retain) or `all`."""
    rows = generate(spec)
    if name == "all":
        return rows
    if name == "train":
        return [r for r in rows if r["split"] != "holdout"]
    if name not in ("forget", "retain", "holdout"):
        raise ValueError(f"unknown benchmark split {name!r}")
    return [r for r in rows if r["split"] == name]


def refusals() -> list[dict]:
    return [{"text": r} for r in REFUSALS]


def corpus(spec: BenchmarkSpec = BenchmarkSpec(n_people=len(FIRST) * len(LAST) // 4)) -> list[str]:
    """Text to train the tiny model's tokenizer on: every name, value and template."""
    texts = []
    for r in generate(spec):
        texts += [r["question"], r["answer"], r["paraphrased_answer"], *r["perturbed_paraphrased_answer"]]
    texts += REFUSALS
    texts += [f"{f} {l}" for f in FIRST for l in LAST]
    return texts


def truth_ratio_correct_for(rows: list[dict]) -> str:
    """Which answer is the truth ratio's denominator for these rows: "answer" for the built-in
    benchmark (its perturbed answers are in the answer's form), TOFU's "paraphrased_answer" otherwise."""
    return "answer" if rows and all("perturbed_paraphrased_answer" in r for r in rows) else "paraphrased_answer"
