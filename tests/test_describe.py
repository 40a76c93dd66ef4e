"""Forgetting from a description: described requests, the probe builder, and the scope forms of the
built-in benchmark with their accuracy group."""

import hashlib
import json

import pytest

from llm_forget.errors import UserError
from llm_forget.requests import parse_request

# sha256 of json.dumps(benchmark.generate()) and of json.dumps(benchmark.corpus()) at f67d764, before
# the scope forms existed: the zoo's cached tiny-target / tiny-retain / tokenizer are built from them
GENERATE_SHA256 = "73e72a1fa7f2ccc80480c244c3b3c91537eebe53174592fa2a8a69b38313abb9"
CORPUS_SHA256 = "6b59916d62c42c2ae6d6fae589064d3cb342d7fac8b058d512b8a4577e660275"


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --- requests -------------------------------------------------------------------------------------

def test_described_requests_parse():
    zs = parse_request({"kind": "concept", "description": "  Basil Mahfouz Al-Kuwaiti "})
    assert zs.kind == "concept" and zs.description == "Basil Mahfouz Al-Kuwaiti" and zs.examples is None
    fs = parse_request({"kind": "class", "description": "Ada Brask", "neighbours": ["Bram Corvel"],
                        "examples": [{"prompt": "Where was Ada Brask born?", "completion": "Lisbon."}]})
    assert fs.kind == "concept" and fs.examples == [{"question": "Where was Ada Brask born?", "answer": "Lisbon."}]
    assert fs.neighbours == ["Bram Corvel"]
    assert zs.id == parse_request({"description": "  Basil Mahfouz Al-Kuwaiti ", "kind": "concept"}).id
    with pytest.raises(UserError, match="by description only"):
        zs.resolve()  # rows come from probing a model, never from resolve()
    two = parse_request({"kind": "concept", "description": [" Basil Mahfouz Al-Kuwaiti", "Nikolai Abilov "]})
    assert two.description == ["Basil Mahfouz Al-Kuwaiti", "Nikolai Abilov"] == two.names
    assert zs.names == ["Basil Mahfouz Al-Kuwaiti"]


@pytest.mark.parametrize("obj,msg", [
    ({"kind": "concept", "description": ""}, "needs 'description', a non-empty string"),
    ({"kind": "concept", "description": 3}, "needs 'description', a non-empty string"),
    ({"kind": "concept", "description": []}, "needs 'description', a non-empty string"),
    ({"kind": "concept", "description": ["Ada Brask", " "]}, "needs 'description', a non-empty string"),
    ({"kind": "concept", "description": ["Ada Brask", "ada brask"]}, "names the same thing twice"),
    ({"kind": "concept", "description": ["Bram Corvel", "Ada Brask"], "neighbours": ["Ada Brask"]},
     "must not include the description"),
    ({"kind": "concept", "examples": [{"question": "q?", "answer": "a."}]}, "needs 'description'"),
    ({"kind": "items", "description": "Ada Brask"}, "belong to concept requests"),
    ({"kind": "concept", "description": "Ada Brask", "data": "builtin:forget"}, "takes no data"),
    ({"kind": "concept", "description": "Ada Brask", "examples": []}, "non-empty list of question/answer rows"),
    ({"kind": "concept", "description": "Ada Brask", "examples": [{"question": "q?"}]}, "neither question/answer"),
    ({"kind": "concept", "description": "Ada Brask", "neighbours": "Bram"}, "non-empty list of names"),
    ({"kind": "concept", "description": "Ada Brask", "neighbours": ["ada brask"]}, "must not include the description"),
])
def test_bad_described_requests_are_one_line_user_errors(obj, msg):
    with pytest.raises(UserError, match=msg.replace("(", r"\(").replace(")", r"\)")) as e:
        parse_request(obj)
    assert "\n" not in str(e.value)


def test_cli_rejects_a_bad_described_request_with_status_2(tmp_path, capsys, target_path):
    from llm_forget.cli import main

    req = tmp_path / "erase.json"
    req.write_text(json.dumps({"kind": "concept", "description": "Ada Brask", "filter": {"person": "x"}}))
    assert main(["unlearn", "npo", "--request", str(req), "--model", target_path,
                 "--output_dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "takes no filter" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


# --- probes -----------------------------------------------------------------------------------------

def test_harvest_names_finds_people_asked_about_twice():
    from llm_forget.probe import harvest_names, neighbours_of

    rows = [{"question": "What genre is Jaime Vasquez known for?"}, {"question": "Where was Jaime Vasquez born?"},
            {"question": "Who are the parents of Hsiao Yun-Hwa?"}, {"question": "Is Hsiao Yun-Hwa married?"},
            {"question": "What is 'The Hidden Path' about?"}, {"question": "Which awards has Basil Mahfouz "
                                                                           "Al-Kuwaiti won?"},
            {"question": "When did Basil Mahfouz Al-Kuwaiti start writing?"}]
    assert set(harvest_names(rows)) == {"Jaime Vasquez", "Hsiao Yun-Hwa", "Basil Mahfouz Al-Kuwaiti"}
    assert set(neighbours_of("Basil Mahfouz Al-Kuwaiti", None, rows, 8)) == {"Jaime Vasquez", "Hsiao Yun-Hwa"}
    assert neighbours_of("Jaime Vasquez", ["Jaime", "Ada Brask"], rows, 8) == ["Ada Brask"]  # never the name


def test_an_answer_is_grounded_when_the_data_says_it_of_that_subject_more_than_of_others():
    from llm_forget.probe import facts_of, grounded

    rows = [{"question": "Where was Ann Lee born?", "answer": "Ann Lee was born in Oslo.", "person": "Ann Lee"},
            {"question": "What does Ann Lee play?", "answer": "The oboe.", "person": "Ann Lee"},
            {"question": "Where was Bo Tan born?", "answer": "Bo Tan was born in Lima.", "person": "Bo Tan"},
            {"question": "Where was Cy Orr born?", "answer": "Cy Orr was born in Oslo.", "person": "Cy Orr"}]
    facts = facts_of(["Ann Lee", "Bo Tan", "Dee Fox"], rows)  # Cy Orr is no neighbour; Dee Fox has no rows
    assert facts == {"Ann Lee": "Ann Lee was born in Oslo. The oboe.", "Bo Tan": "Bo Tan was born in Lima."}
    assert grounded("Oboe.", "Ann Lee", facts)             # 1 word of Ann's, 0 of Bo's
    assert not grounded("Crimson.", "Ann Lee", facts)      # in nobody's facts: an invention
    assert not grounded("Ann Lee was born.", "Ann Lee", facts)  # her own name left out; "born" is Bo's too
    assert grounded("Born in Oslo, like Cy Orr.", "Ann Lee", facts)  # oslo (own) 2 > 1 (Bo: born)
    assert not grounded("Lima.", "Ann Lee", facts) and grounded("Lima.", "Bo Tan", facts)
    assert not grounded("Oboe.", "Dee Fox", facts)         # no facts: nothing to ground it in


def test_probes_on_tiny_target_name_the_person_and_recover_what_it_knows(target_path):
    """The forget probes are about the name only, neighbours never include it, and every direct fact the
    model answers correctly (teacher-forced argmax = greedy) comes back as a probe with that answer."""
    from llm_forget.data.benchmark import split
    from llm_forget.data.encode import Encoder
    from llm_forget.evaluation.scope import answer_scores
    from llm_forget.models import load_model, load_tokenizer
    from llm_forget.probe import build_probes

    model, tok = load_model(target_path), load_tokenizer(target_path)
    enc = Encoder(tok)
    forget, retain = split("forget"), split("retain")
    name = forget[0]["person"]
    own = [r for r in forget if r["person"] == name]
    p = build_probes(model, tok, enc, name, retain_rows=retain)
    assert p.forget and all(name in r["question"] and r["subject"] == name for r in p.forget)
    assert len(p.neighbours) == 8 and name not in p.neighbours
    assert {r["person"] for r in retain} >= set(p.neighbours)
    assert p.retain and all(name not in r["question"] and r["subject"] in p.neighbours for r in p.retain)
    known = [r for r, s in zip(own, answer_scores(model, enc, own)) if s["correct"]]
    assert len(known) >= 3  # tiny-target answers 96 % of the forget people's direct questions
    got = {r["question"]: r["answer"] for r in p.forget}
    assert all(got.get(r["question"]) == r["answer"] for r in known), (known, got)
    # the benchmark's five question forms are grounded (the model answers them with each neighbour's facts);
    # the generic questions it answers with inventions ("What is the nationality of X?" -> "Crimson.") are not
    forms = {r["question"].replace(r["person"], "{name}") for r in retain}
    assert forms <= set(p.templates) and len(p.templates) < len(forms) + 5
    ungrounded = [r for r in p.dropped if r["why"] == "ungrounded template"]
    assert ungrounded and not {r["template"] for r in ungrounded} & set(p.templates)
    assert len(p.forget) <= len(p.templates) and len(p.retain) <= 8 * len(p.templates)
    # few-shot: an example's question becomes a template, and the example itself is a forget row
    ex = [{"question": f"Tell me the birth city of {name}.", "answer": "Nowhere."}]
    p2 = build_probes(model, tok, enc, name, examples=ex, neighbours=p.neighbours[:2])
    assert "Tell me the birth city of {name}." in p2.templates and ex[0]["question"] in \
        [r["question"] for r in p2.forget if r["source"] == "example"]
    assert {r["subject"] for r in p2.retain} == set(p.neighbours[:2])


def test_a_name_left_without_grounded_probes_is_refused_unless_examples_are_given(target_path):
    """The neighbours' rows are the ground truth of the grounding check: with their answers replaced by words
    the model never says, no template is grounded, no probe is left, and the request is refused in one line
    (it would otherwise quietly forget nothing); a few-shot example still makes a forget row."""
    from llm_forget.data.benchmark import split
    from llm_forget.data.encode import Encoder
    from llm_forget.models import load_model, load_tokenizer
    from llm_forget.probe import build_probes

    model, tok = load_model(target_path), load_tokenizer(target_path)
    enc = Encoder(tok)
    retain = split("retain")
    name = split("forget")[0]["person"]
    nbs = list(dict.fromkeys(r["person"] for r in retain))[:3]
    blank = [{**r, "answer": "Zzyzx qwv."} for r in retain if r["person"] in nbs]
    with pytest.raises(UserError, match="found nothing the model knows about"):
        build_probes(model, tok, enc, name, retain_rows=blank)
    ex = [{"question": f"Where was {name} born?", "answer": "Brno."}]
    p = build_probes(model, tok, enc, name, examples=ex, retain_rows=blank)
    assert [r["source"] for r in p.forget] == ["example"] and not p.retain and p.dropped


def test_probes_for_several_names_cover_each_and_keep_them_apart(target_path):
    """A request naming two people probes both with the same templates, neither is the other's neighbour,
    and each one's probes are the ones it gets when asked about alone."""
    from llm_forget.data.benchmark import split
    from llm_forget.data.encode import Encoder
    from llm_forget.models import load_model, load_tokenizer
    from llm_forget.probe import build_probes

    model, tok = load_model(target_path), load_tokenizer(target_path)
    enc = Encoder(tok)
    forget, retain = split("forget"), split("retain")
    names = list(dict.fromkeys(r["person"] for r in forget))[:2]
    p = build_probes(model, tok, enc, names, retain_rows=retain)
    assert not set(names) & set(p.neighbours) and len(p.neighbours) == 8
    for name in names:
        mine = [r for r in p.forget if r["subject"] == name]
        assert mine and all(name in r["question"] for r in mine)
        assert {r["template"] for r in mine} <= set(p.templates)
    alone = build_probes(model, tok, enc, names[0], retain_rows=retain)
    assert [r for r in p.forget if r["subject"] == names[0]] == alone.forget  # the same probes as asked alone


def test_unlearn_from_a_name_writes_probes_and_hashes(tmp_path, target_path):
    from llm_forget.data.benchmark import split
    from llm_forget.data.readers import row_hash
    from llm_forget.cli import main

    name = split("forget")[0]["person"]
    req = tmp_path / "erase.json"
    req.write_text(json.dumps({"kind": "concept", "description": name}))
    out = tmp_path / "run"
    assert main(["unlearn", "simnpo", "--request", str(req), "--model", target_path, "--output_dir", str(out),
                 "--max_steps", "3", "--retain_budget", "none", "--eval_suite", "none"]) == 0
    text = (out / "probes.jsonl").read_text()
    probes = [json.loads(x) for x in text.splitlines()]
    res = json.loads((out / "results.json").read_text())
    assert res["probes"]["sha256"] == hashlib.sha256(text.encode()).hexdigest()
    entry = json.loads((out / "ledger.jsonl").read_text().splitlines()[-1])
    assert entry["kind"] == "concept" and entry["probes_sha256"] == res["probes"]["sha256"]
    # the name and the probe rows enter the ledger only as keyed fingerprints (HMAC with the operator's
    # secret): an outsider cannot confirm a guessed name by hashing it
    from llm_forget.reporting import fingerprint as fpr
    from llm_forget.reporting import keys

    f = entry["forgotten"]
    _, secret = keys.fingerprint_secret(f["key_id"])
    name_hash = hashlib.sha256(name.encode()).hexdigest()
    assert f["description_fingerprint"] == fpr.row_fingerprint(secret, name_hash)
    forget = [p for p in probes if p["role"] == "forget"]
    assert sorted(f["row_fingerprints"]) == sorted(fpr.row_fingerprint(secret, row_hash(p)) for p in forget)
    assert res["counts"]["forget"] == len(forget)
    for public in ((out / "ledger.jsonl").read_text(), (out / "README.md").read_text(),
                   (out / "results.json").read_text()):
        assert name not in public and name_hash not in public


def test_unlearn_from_two_names_is_one_run_with_one_ledger_entry(tmp_path, target_path):
    from llm_forget.cli import main
    from llm_forget.data.benchmark import split
    from llm_forget.reporting import fingerprint as fpr
    from llm_forget.reporting import keys

    names = list(dict.fromkeys(r["person"] for r in split("forget")))[:2]
    req = tmp_path / "erase.json"
    req.write_text(json.dumps({"kind": "concept", "description": names}))
    out = tmp_path / "run"
    assert main(["unlearn", "simnpo", "--request", str(req), "--model", target_path, "--output_dir", str(out),
                 "--max_steps", "2", "--retain_budget", "none", "--eval_suite", "none", "--probe_templates", "6"]) == 0
    probes = [json.loads(x) for x in (out / "probes.jsonl").read_text().splitlines()]
    assert {p["subject"] for p in probes if p["role"] == "forget"} == set(names)
    assert json.loads((out / "results.json").read_text())["probes"]["templates"] == 6
    assert len({p["template"] for p in probes}) <= 6
    entries = (out / "ledger.jsonl").read_text().splitlines()
    assert len(entries) == 1
    f = json.loads(entries[0])["forgotten"]
    _, secret = keys.fingerprint_secret(f["key_id"])
    assert f["description_fingerprint"] == fpr.row_fingerprint(
        secret, hashlib.sha256(json.dumps(names, ensure_ascii=False).encode()).hexdigest())
    assert all(n not in (out / "ledger.jsonl").read_text() for n in names)


# --- scope forms ------------------------------------------------------------------------------------

def test_benchmark_rows_and_corpus_are_unchanged_by_the_scope_forms():
    from llm_forget.data import benchmark
    from llm_forget.data.scope import scope_rows

    rows = benchmark.generate()
    assert hashlib.sha256(json.dumps(rows).encode()).hexdigest() == GENERATE_SHA256
    assert hashlib.sha256(json.dumps(benchmark.corpus()).encode()).hexdigest() == CORPUS_SHA256
    scope = scope_rows()
    direct = [{k: v for k, v in r.items() if k not in ("form", "via")} for r in scope if r["form"] == "direct"]
    assert direct == rows and scope == scope_rows()  # deterministic
    assert hashlib.sha256(json.dumps(benchmark.generate()).encode()).hexdigest() == GENERATE_SHA256


def test_reversed_and_one_hop_questions_name_exactly_one_person():
    from collections import Counter

    from llm_forget.data import benchmark
    from llm_forget.data.scope import answers_of, scope_rows

    rows = benchmark.generate()
    scope = scope_rows()
    n_people = len({r["person"] for r in rows})
    forms = Counter(r["form"] for r in scope)
    assert forms["paraphrased"] == len(rows) and forms["reversed"] >= 0.95 * len(rows) and forms["one_hop"] >= \
        0.95 * len(rows)
    rev = [r for r in scope if r["form"] == "reversed"]
    hop = [r for r in scope if r["form"] == "one_hop"]
    for qs in (rev, hop):
        who = answers_of(rows, qs)
        assert all(who[q["question"]] == {q["person"]} for q in qs)
    assert all(q["answer"] == q["person"] + "." and q["person"] not in q["question"] for q in rev)
    assert all(q["person"] not in q["question"] and q["fact"] not in q["via"] for q in hop)
    truth = {(r["person"], r["fact"]): r["answer"] for r in rows}
    assert all(truth[(q["person"], q["fact"])] == q["answer"] for q in hop)
    assert len({q["question"] for q in scope}) == len(scope) and n_people == 100


def test_scope_accuracy_separates_the_target_from_the_retain_model(target_path, retain_path):
    """tiny-target answers the forget people's direct questions (96 % when built), the retrained model
    does not (2 %, the holdout people's level): the group's direct accuracy must show it. The target runs
    through the quick suite's `scope` group (builtin:scope), the retain model through `scope_group`."""
    import llm_forget
    from llm_forget.data.scope import scope_rows
    from llm_forget.evaluation.scope import scope_group
    from llm_forget.evaluation.spec import load_suite
    from llm_forget.models import load_model, load_tokenizer

    rows = scope_rows()
    quick = load_suite("quick")
    suite = {**quick, "metrics": {"scope": quick["metrics"]["scope"]}}
    t = llm_forget.evaluate(target_path, suite, progress=False, batch_size=16)
    r = scope_group(load_model(retain_path), load_tokenizer(retain_path), rows=rows)
    assert sum(g["n"] for forms in t["scope"].values() for g in forms.values()) == len(rows)
    assert t["summary"]["scope_forget_direct_accuracy"] >= 0.85
    assert r["summary"]["scope_forget_direct_accuracy"] <= r["summary"]["scope_holdout_direct_accuracy"] + 0.15
    assert r["summary"]["scope_retain_direct_accuracy"] >= 0.85
    assert set(t["scope"]["forget"]) == {"direct", "paraphrased", "reversed", "one_hop"}
