"""The deletion ledger: hash chain, continuation across runs, and tamper detection."""

import json
import shutil

import pytest

from llm_forget.cli import main
from llm_forget.reporting import ledger as L


def test_canonical_form_and_hashes_hand_computed():
    assert L.canonical({"b": 1, "a": "é"}) == b'{"a":"\xc3\xa9","b":1}'
    # sha256(b'{"a":1}'): the entry's own "hash" field is left out of what is hashed
    assert L.entry_hash({"a": 1, "hash": "anything"}) == \
        "015abd7f5cc57a2dd94b7590f04ad8084273905ee33ec5cebeae62276a97f862"
    # sha256(b"aa\nbb"): sorted row hashes joined by newlines, whatever their order
    assert L.set_digest(["bb", "aa"]) == "80c0d5c7137871baa75af2038f350bf60a4d45a131a653d0eb93f3cda3d28609"


def test_chain_links_entries():
    e0 = L.chain([], {"x": 1})
    e1 = L.chain([e0], {"x": 2})
    assert e0["prev_hash"] == L.GENESIS and e0["index"] == 0
    assert e1["prev_hash"] == e0["hash"] == L.entry_hash(e0) and e1["index"] == 1
    assert L.verify_chain([e0, e1]) == []
    assert L.verify_chain([e1])[0].startswith("entry 0")


def test_append_copies_the_parent_chain_and_fresh_restarts_from_it(tmp_path):
    parent, child = tmp_path / "parent", tmp_path / "child"
    L.append(parent, {"op": 1})
    L.append(parent, {"op": 2})
    L.append(child, {"op": 3}, parent=parent / "ledger.jsonl")
    lines = (child / "ledger.jsonl").read_text().splitlines()
    assert lines[:2] == (parent / "ledger.jsonl").read_text().splitlines() and len(lines) == 3
    assert L.verify_chain(L.read(child)) == []
    # a rerun into the same folder replaces its model: its history restarts from the parent's
    L.append(child, {"op": 4}, parent=parent / "ledger.jsonl", fresh=True)
    assert [e["op"] for e in L.read(child)] == [1, 2, 4]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, target_path):
    """Two chained unlearning runs: run2 starts from run1's model, forgetting a concept."""
    from llm_forget import unlearn
    from llm_forget.data import benchmark

    d = tmp_path_factory.mktemp("ledger")
    forget = benchmark.split("forget")
    (d / "f.json").write_text(json.dumps(forget[:4]))
    (d / "r.json").write_text(json.dumps(benchmark.split("retain")[:4]))
    person = forget[5]["person"]
    (d / "req.json").write_text(json.dumps({"kind": "concept", "data": "builtin:forget", "field": "person",
                                            "value": person}))
    common = dict(model=target_path, retain=str(d / "r.json"), holdout="none", max_steps=1, eval_suite="none",
                  learning_rate=1e-4, disable_tqdm=True, per_device_train_batch_size=4)
    r1 = unlearn("llm_forget/recipes/grad_diff.yaml", forget=str(d / "f.json"), output_dir=str(d / "run1"), **common)
    r2 = unlearn("llm_forget/recipes/grad_diff.yaml", **{**common, "model": str(r1.model_dir)},
                 request=str(d / "req.json"), output_dir=str(d / "run2"))
    return r1.output_dir, r2.output_dir, person


def _copy(run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


def test_untouched_run_verifies_and_continues_the_input_chain(runs, capsys):
    from llm_forget.data import benchmark
    from llm_forget.data.readers import row_hash

    run1, run2, person = runs
    v = L.verify(run2)
    assert v.ok, v.problems
    assert v.entries == 2
    e0, e1 = L.read(run2)
    assert (run1 / "ledger.jsonl").read_text().splitlines()[0] == (run2 / "ledger.jsonl").read_text().splitlines()[0]
    assert e1["prev_hash"] == e0["hash"] and e1["model_before"] == e0["model_after"]
    assert e1["kind"] == "concept" and e1["forgotten"]["count"] == 5
    want = sorted(row_hash(r) for r in benchmark.split("forget") if r["person"] == person)
    assert sorted(e1["forgotten"]["row_sha256"]) == want
    assert e1["method"] == "grad_diff" and e1["hyperparameters"]["learning_rate"] == 1e-4
    assert main(["ledger", "verify", str(run2)]) == 0
    assert "ok: 2 entries" in capsys.readouterr().out


def test_altering_one_byte_of_an_entry_fails(runs, tmp_path, capsys):
    run = _copy(runs[1], tmp_path)
    p = run / "ledger.jsonl"
    b = bytearray(p.read_bytes())
    i = b.index(b'"steps":1') + len(b'"steps":')
    b[i] = ord("2")  # one byte of entry 0
    p.write_bytes(bytes(b))
    v = L.verify(run)
    assert not v.ok
    assert any(x.startswith("entry 0: content does not match") for x in v.problems)
    assert main(["ledger", "verify", str(run)]) == 1
    assert "entry 0" in capsys.readouterr().out


def test_deleting_an_entry_fails(runs, tmp_path, capsys):
    run = _copy(runs[1], tmp_path)
    p = run / "ledger.jsonl"
    p.write_text(p.read_text().splitlines(keepends=True)[1])
    v = L.verify(run)
    assert not v.ok
    assert any(x.startswith("entry 0:") and "genesis" in x for x in v.problems)
    assert main(["ledger", "verify", str(run)]) == 1
    assert "FAILED: entry 0" in capsys.readouterr().out


def test_changed_weights_fail(runs, tmp_path, capsys):
    run = _copy(runs[1], tmp_path)
    w = run / "model" / "model.safetensors"
    b = bytearray(w.read_bytes())
    b[-3] ^= 1  # a bit of the last weight, not the header
    w.write_bytes(bytes(b))
    v = L.verify(run)
    assert not v.ok
    assert v.problems == [f"entry 1: model_after does not match the weights in {run / 'model'} "
                          "(the model changed after this entry)"]
    assert main(["ledger", "verify", str(run)]) == 1
    assert "entry 1" in capsys.readouterr().out


def test_missing_ledger_is_a_user_error(tmp_path):
    assert main(["ledger", "verify", str(tmp_path)]) == 2
