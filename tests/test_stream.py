"""Deletion requests (items, concept, task) and request streams."""

import json

import pytest

from llm_forget.cli import main
from llm_forget.errors import UserError
from llm_forget.requests import load_requests, parse_request, select


def test_request_kinds_resolve_to_the_right_rows(tmp_path):
    from llm_forget.data import benchmark
    from llm_forget.data.readers import row_hash

    rows = benchmark.split("forget")
    person = rows[0]["person"]
    concept = parse_request({"kind": "concept", "data": "builtin:forget", "field": "person", "value": person})
    got = concept.resolve()
    assert len(got) == 5 and {r["person"] for r in got} == {person}  # 5 facts per person
    cls = parse_request({"kind": "class", "data": "builtin:forget",
                         "filter": {"fact": ["birthplace", "birth_year"], "person": person}})
    assert {r["fact"] for r in cls.resolve()} <= {"birthplace", "birth_year"} and cls.kind == "concept"
    picked = parse_request({"kind": "items", "data": "builtin:forget", "sha256": [row_hash(rows[3])]}).resolve()
    assert picked == [rows[3]]
    inline = parse_request({"kind": "items", "rows": [{"prompt": "q?", "completion": "a."}]}).resolve()
    assert inline == [{"question": "q?", "answer": "a."}]
    assert parse_request({"kind": "task", "data": "builtin:forget"}).resolve() == rows
    # the same request always gets the same id
    assert concept.id == parse_request({"value": person, "field": "person", "data": "builtin:forget",
                                        "kind": "concept"}).id


@pytest.mark.parametrize("obj,msg", [
    ({"kind": "people"}, "kind must be one of"),
    ({"kind": "items"}, "exactly one of 'rows' or 'data'"),
    ({"kind": "concept", "data": "builtin:forget"}, "needs field/value or a filter"),
    ({"kind": "concept", "data": "builtin:forget", "field": "person", "value": "Nobody Here"}, "no row of"),
    ({"kind": "items", "data": "builtin:forget", "sha256": ["ab"]}, "64-hex-digit"),
    ({"kind": "task", "data": "builtin:forget", "colour": 1}, "unknown field(s) colour"),
])
def test_bad_requests_are_one_line_user_errors(obj, msg):
    with pytest.raises(UserError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        parse_request(obj).resolve()


def test_request_files_and_selection(tmp_path):
    p = tmp_path / "reqs.jsonl"
    p.write_text('{"kind": "task", "data": "builtin:forget", "id": "a"}\n'
                 '{"kind": "task", "data": "builtin:holdout", "id": "b"}\n')
    assert [r.id for r in load_requests(p)] == ["a", "b"]
    assert select(f"{p}#1").id == "b" and select(f"{p}#a").id == "a"
    with pytest.raises(UserError, match="holds 2 requests"):
        select(str(p))
    y = tmp_path / "r.yaml"
    y.write_text("kind: concept\ndata: builtin:forget\nfilter:\n  fact: food\n")
    assert {r["fact"] for r in select(str(y)).resolve()} == {"food"}


@pytest.fixture(scope="module")
def stream(tmp_path_factory, target_path):
    from llm_forget.data import benchmark
    from llm_forget.data.readers import row_hash

    d = tmp_path_factory.mktemp("stream")
    forget = benchmark.split("forget")
    people = sorted({r["person"] for r in forget})
    (d / "r.json").write_text(json.dumps(benchmark.split("retain")[:6]))
    (d / "h.json").write_text(json.dumps(benchmark.split("holdout")[:5]))
    second = [r for r in forget if r["person"] == people[1]][:3]
    (d / "requests.jsonl").write_text(
        json.dumps({"kind": "concept", "data": "builtin:forget", "field": "person", "value": people[0],
                    "id": "erase-first"}) + "\n"
        + json.dumps({"kind": "items", "data": "builtin:forget", "sha256": [row_hash(r) for r in second],
                      "id": "erase-second"}) + "\n")
    rc = main(["stream", "grad_diff", "--requests", str(d / "requests.jsonl"), "--model", target_path,
               "--retain", str(d / "r.json"), "--holdout", str(d / "h.json"), "--output_dir", str(d / "out"),
               "--max_steps", "2", "--learning_rate", "1e-3", "--per_device_train_batch_size", "5",
               "--retain_budget", "none", "--disable_tqdm", "true"])  # mechanics: every step applied
    assert rc == 0
    return d / "out"


def test_stream_applies_requests_in_order_and_evaluates_each(stream):
    out = json.loads((stream / "stream.json").read_text())
    steps = out["steps"]
    assert [s["step"] for s in steps] == [0, 1, 2]
    assert [s["request_id"] for s in steps] == [None, "erase-first", "erase-second"]
    assert [s.get("rows") for s in steps] == [None, 5, 3]
    assert set(steps[0]["per_request"]) == {"request_0", "request_1"}  # the input model on every request
    assert set(steps[2]["per_request"]) == {"request_0"} and "earlier_probability" in steps[2]
    assert steps[2]["earlier_probability"] == steps[2]["per_request"]["request_0"]["probability"]
    # request 1 forgot person 0: their answers got less likely than in the input model
    assert steps[1]["forget_probability"] < steps[0]["per_request"]["request_0"]["probability"]
    for s in steps:
        assert 0 < s["retain_probability"] <= 1
    assert (stream / "plots" / "stream.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (stream / "stream.md").read_text()
    assert "| 2 | erase-second | items | 3 |" in md


def test_stream_continues_one_ledger_chain(stream):
    from llm_forget.reporting import ledger

    last = stream / "step_02_erase-second"
    v = ledger.verify(last)
    assert v.ok, v.problems
    e = ledger.read(last)
    assert [x["request_id"] for x in e] == ["erase-first", "erase-second"]
    assert [x["kind"] for x in e] == ["concept", "items"]
    assert e[1]["model_before"] == e[0]["model_after"]
    assert ledger.verify(stream / "step_01_erase-first").ok


def test_stream_applies_the_input_rules_before_touching_its_output(tmp_path, target_path, capsys):
    """A stream of the user's own rows gets the same rules as `unlearn` (llm_forget/inputs.py), checked
    before the output folder is replaced: the recipe's built-in retain set next to them is refused, an
    overlap is refused, and the built-in holdout is dropped (no membership numbers against fictitious
    people in the stream's table)."""
    rows = [{"question": f"Which tea does the archivist Quill Varga{i} brew?", "answer": a}
            for i, a in enumerate(["Sencha", "Rooibos", "Oolong"])]
    keep = [{"question": f"Which river runs past the mill of Tova Brin{i}?", "answer": a}
            for i, a in enumerate(["Elbe", "Drava", "Tagus"])]
    (tmp_path / "mine.json").write_text(json.dumps(rows))
    (tmp_path / "keep.json").write_text(json.dumps(keep))
    (tmp_path / "overlap.json").write_text(json.dumps(keep + rows[:1]))
    (tmp_path / "req.jsonl").write_text(json.dumps({"kind": "items", "data": str(tmp_path / "mine.json"),
                                                    "id": "mine"}) + "\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "earlier.txt").write_text("an earlier stream's file")
    common = ["stream", "grad_diff", "--requests", str(tmp_path / "req.jsonl"), "--model", target_path,
              "--output_dir", str(out), "--overwrite"]
    assert main(common) == 2
    assert "retain set is the recipe's builtin:retain" in capsys.readouterr().err
    assert main(common + ["--retain", str(tmp_path / "overlap.json")]) == 2
    assert "1 of 3 forget rows also occur in the retain set" in capsys.readouterr().err
    assert (out / "earlier.txt").read_text() == "an earlier stream's file"  # nothing touched
    assert main(common + ["--retain", str(tmp_path / "keep.json"), "--max_steps", "1", "--retain_budget", "none",
                          "--per_device_train_batch_size", "3", "--disable_tqdm", "true"]) == 0
    steps = json.loads((out / "stream.json").read_text())["steps"]
    assert not (out / "earlier.txt").exists() and [s["step"] for s in steps] == [0, 1]
    assert "retain_probability" in steps[0] and "holdout_probability" not in steps[0]
    assert "mia_auc" not in steps[1]
