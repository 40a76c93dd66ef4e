"""The deletion ledger: hash chain, Ed25519 signatures, keyed row fingerprints, model fingerprint,
continuation across runs, locked appends, migration of version-1 ledgers, and tamper detection."""

import hashlib
import json
import os
import shutil
import threading

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from llm_forget.cli import main
from llm_forget.reporting import fingerprint as fpr
from llm_forget.reporting import keys, proofs
from llm_forget.reporting import ledger as L


def test_canonical_form_and_hashes_hand_computed():
    assert L.canonical({"b": 1, "a": "é"}) == b'{"a":"\xc3\xa9","b":1}'
    # sha256(b'{"a":1}'): the entry's own "hash" and "signature" fields are left out of what is hashed
    assert L.entry_hash({"a": 1, "hash": "anything", "signature": "sig"}) == \
        "015abd7f5cc57a2dd94b7590f04ad8084273905ee33ec5cebeae62276a97f862"
    # sha256(b"aa\nbb"): sorted fingerprints joined by newlines, whatever their order
    assert L.set_digest(["bb", "aa"]) == "80c0d5c7137871baa75af2038f350bf60a4d45a131a653d0eb93f3cda3d28609"


def test_row_fingerprint_is_the_documented_hmac():
    import hmac

    secret, h = bytes(range(32)), "ab" * 32
    k = hmac.new(secret, b"llm_forget.row-key/1" + h.encode(), hashlib.sha256).digest()
    assert fpr.row_key(secret, h) == k.hex()
    assert fpr.row_fingerprint(secret, h) == hmac.new(k, h.encode(), hashlib.sha256).hexdigest()
    assert fpr.row_fingerprint(bytes(32), h) != fpr.row_fingerprint(secret, h)


def _rehash(entries):
    """What a forger who can write the file does: re-link and re-hash every entry (signatures kept)."""
    out = []
    for i, e in enumerate(entries):
        e = dict(e, index=i, prev_hash=out[-1]["hash"] if out else L.GENESIS)
        e["hash"] = L.entry_hash(e)
        out.append(e)
    return out


def test_signed_chain_and_forgeries():
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    pub = keys.public_b64(key)
    e0 = L.chain([], {"x": 1, "version": 2, "model_after": "m0"}, key)
    e1 = L.chain([e0], {"x": 2, "version": 2, "model_before": "m0", "model_after": "m1"}, key)
    assert e0["prev_hash"] == L.GENESIS and e1["prev_hash"] == e0["hash"] == L.entry_hash(e0)
    assert e1["signer"] == pub
    assert L.verify_chain([e0, e1])[0] == [] and L.verify_chain([e0, e1], trust={pub})[0] == []
    assert L.verify_chain([e1])[0][0].startswith("entry 0")
    # edit entry 0 and re-hash the whole chain: the hashes agree again, the signatures do not
    forged = _rehash([{**e0, "x": 99}, e1])
    problems, _ = L.verify_chain(forged)
    assert [p[:30] for p in problems] == ["entry 0: signature does not ve", "entry 1: signature does not ve"]
    # re-signed with the forger's own key: only a pinned key exposes it
    resigned = [L.chain([], {**e0, "x": 99}, other)]
    resigned.append(L.chain(resigned, e1, other))
    assert L.verify_chain(resigned)[0] == []
    assert L.verify_chain(resigned, trust={pub})[0] == [
        f"entry {i}: signed by key {keys.key_id(keys.public_b64(other))}, which is not trusted" for i in (0, 1)]
    # signatures stripped (posing as an old unsigned ledger): caught by a pinned key
    stripped = _rehash([{k: v for k, v in e.items() if k not in ("signer", "signature")} for e in (e0, e1)])
    assert L.verify_chain(stripped)[0] == []
    assert len(L.verify_chain(stripped, trust={pub})[0]) == 2
    # stripping only the tail is caught without one
    tail = {k: v for k, v in e1.items() if k not in ("signature", "signer")}
    assert L.verify_chain([e0] + _rehash([e0, tail])[1:])[0] == [
        "entry 1: unsigned although earlier entries are signed (signatures stripped?)"]


def test_lineage_is_never_skipped_silently():
    key = Ed25519PrivateKey.generate()
    e0 = L.chain([], {"version": 2, "model_after": "m0"}, key)
    e1 = L.chain([e0], {"version": 2, "model_before": None, "model_after": "m1"}, key)
    assert L.verify_chain([e0, e1])[0] == ["entry 1: model_before is missing, so its lineage cannot be checked"]
    e1 = L.chain([e0], {"version": 2, "model_before": "other", "model_after": "m1"}, key)
    assert L.verify_chain([e0, e1])[0] == ["entry 1: model_before does not match entry 0's model_after"]
    old0 = L.chain([], {"version": 1, "model_after": "m0"})
    old1 = L.chain([old0], {"version": 1, "model_before": None, "model_after": "m1"})
    assert L.verify_chain([old0, old1])[0] == []
    assert L.verify_chain([old0, old1])[1][-1] == "entry 1: no model_before (version-1 entry; lineage not checked)"


def test_append_copies_the_parent_chain_and_fresh_restarts_from_it(tmp_path):
    parent, child = tmp_path / "parent", tmp_path / "child"
    L.append(parent, {"op": 1})
    L.append(parent, {"op": 2})
    L.append(child, {"op": 3}, parent=parent / "ledger.jsonl")
    lines = (child / "ledger.jsonl").read_text().splitlines()
    assert lines[:2] == (parent / "ledger.jsonl").read_text().splitlines() and len(lines) == 3
    assert L.verify_chain(L.read(child))[0] == []
    # signed by default with the per-user key, created on first use outside the run folder (0600)
    user_key = keys.config_dir() / keys.SIGNING_KEY
    assert oct(user_key.stat().st_mode & 0o777) == "0o600"
    assert L.read(child)[-1]["signer"] == keys.public_b64(keys.load_signing_key())
    assert (child / "ledger.pub").read_text().split()[0] == L.read(child)[-1]["signer"]
    # a rerun into the same folder replaces its model: its history restarts from the parent's
    L.append(child, {"op": 4}, parent=parent / "ledger.jsonl", fresh=True)
    assert [e["op"] for e in L.read(child)] == [1, 2, 4]


def test_append_refuses_a_ledger_that_does_not_verify(tmp_path):
    from llm_forget.errors import UserError

    L.append(tmp_path, {"op": 1})
    p = tmp_path / "ledger.jsonl"
    p.write_text(p.read_text().replace('"op":1', '"op":7'))
    with pytest.raises(UserError, match="does not verify .*entry 0: content does not match"):
        L.append(tmp_path, {"op": 2})
    assert len(p.read_text().splitlines()) == 1


def test_concurrent_appends_are_serialised(tmp_path):
    """Four writers, five appends each, on one ledger: the lock keeps every entry and the chain."""
    key = keys.load_signing_key()

    def writer(w):
        for i in range(5):
            L.append(tmp_path, {"writer": w, "i": i}, signing_key=key)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    entries = L.read(tmp_path)
    assert len(entries) == 20 and L.verify_chain(entries)[0] == []
    assert sorted((e["writer"], e["i"]) for e in entries) == [(w, i) for w in range(4) for i in range(5)]


def test_model_fingerprint_covers_config_and_tokenizer(tmp_path, target_path):
    from llm_forget.models import model_hash

    m = tmp_path / "m"
    shutil.copytree(target_path, m)
    base, weights_only = fpr.model_fingerprint(m), model_hash(m)
    names = {f.name for f in fpr.model_files(m)}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    cfg = json.loads((m / "config.json").read_text())
    (m / "config.json").write_text(json.dumps({**cfg, "rope_theta": cfg.get("rope_theta", 10000.0) * 2}))
    assert fpr.model_fingerprint(m) != base and model_hash(m) == weights_only  # the gap version 1 had
    shutil.copy(f"{target_path}/config.json", m / "config.json")
    assert fpr.model_fingerprint(m) == base
    tc = json.loads((m / "tokenizer_config.json").read_text())
    (m / "tokenizer_config.json").write_text(json.dumps({**tc, "model_max_length": 7}))
    assert fpr.model_fingerprint(m) != base
    shutil.copy(f"{target_path}/tokenizer_config.json", m / "tokenizer_config.json")
    (m / "adapter_config.json").write_text("{}")
    assert fpr.model_fingerprint(m) != base
    os.remove(m / "adapter_config.json")
    (m / "README.md").write_text("a card")  # evidence about the model is not the model
    (m / "ledger.jsonl").write_text("")
    assert fpr.model_fingerprint(m) == base


def _dictionary():
    """An attacker's dictionary: every row of the built-in benchmark (it holds the true forget rows)."""
    from llm_forget.data import benchmark

    return [r for split in ("train", "forget", "retain", "holdout") for r in benchmark.split(split)]


def _guesses(row):
    from llm_forget.data.readers import row_hash

    texts = [row.get("question", ""), row.get("answer", ""), row.get("question", "") + row.get("answer", "")]
    return {row_hash(row)} | {hashlib.sha256(t.encode()).hexdigest() for t in texts}


def test_dictionary_attack_on_published_fingerprints_recovers_no_row(tmp_path, target_path):
    """Publish a ledger (and its card) that forgot the built-in benchmark's whole forget split, and
    let an attacker hash every row he can guess: keyed fingerprints give away 0 rows; the
    version-1 ledger's plain sha256 gives away all of them."""
    from llm_forget.data import benchmark
    from llm_forget.data.readers import row_hash

    forget = benchmark.split("forget")
    hashes = [row_hash(r) for r in forget]
    shutil.copytree(target_path, tmp_path / "keyed" / "model")
    entry = L.new_entry(kind="items", operation="unlearn", forgotten_hashes=hashes, method="npo", hyperparameters={},
                        model_before=None, model_after=fpr.model_fingerprint(tmp_path / "keyed" / "model"))
    L.append(tmp_path / "keyed", entry)
    (tmp_path / "keyed" / "results.json").write_text(json.dumps({"method": "npo", "model": target_path}))
    from llm_forget.reporting.card import write_card

    write_card(tmp_path / "keyed")
    published = "".join((tmp_path / "keyed" / n).read_text() for n in ("ledger.jsonl", "ledger.pub", "README.md"))
    legacy = json.dumps(L.chain([], {"version": 1, "forgotten": {"count": len(hashes), "row_sha256": hashes}}))

    def recovered(text):
        return [r for r in _dictionary() if any(g in text for g in _guesses(r))]

    assert {row_hash(r) for r in recovered(legacy)} == set(hashes) and len(hashes) == 50
    assert recovered(published) == []
    # the operator, and only with the fingerprint secret, can still prove one row's deletion
    proof = proofs.prove(tmp_path / "keyed", forget[3])
    assert proofs.check(tmp_path / "keyed", forget[3], proof).startswith("the row was forgotten in entry 0")
    from llm_forget.errors import UserError

    with pytest.raises(UserError, match="not in entry 0"):
        proofs.check(tmp_path / "keyed", forget[4], proof)  # a proof opens its own row only


@pytest.fixture(scope="module")
def runs(tmp_path_factory, target_path):
    """Two chained unlearning runs: run2 starts from run1's model, forgetting a concept, and is
    signed with an operator key made by `llm-forget ledger keygen`."""
    from llm_forget import unlearn
    from llm_forget.data import benchmark

    d = tmp_path_factory.mktemp("ledger")
    assert main(["ledger", "keygen", str(d / "operator.pem")]) == 0
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
                 request=str(d / "req.json"), output_dir=str(d / "run2"), signing_key=str(d / "operator.pem"))
    return r1.output_dir, r2.output_dir, person, d / "operator.pem"


def _copy(run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


def test_untouched_run_verifies_and_continues_the_input_chain(runs, capsys, target_path):
    from llm_forget.data import benchmark
    from llm_forget.data.readers import row_hash

    run1, run2, person, operator = runs
    v = L.verify(run2)
    assert v.ok, v.problems
    assert v.entries == 2 and v.unsigned == 0 and len(v.signers) == 2
    e0, e1 = L.read(run2)
    assert (run1 / "ledger.jsonl").read_text().splitlines()[0] == (run2 / "ledger.jsonl").read_text().splitlines()[0]
    assert e1["prev_hash"] == e0["hash"] and e1["model_before"] == e0["model_after"]
    assert e0["model_before"] == fpr.model_fingerprint(target_path)  # lineage from the zoo model on
    assert e1["kind"] == "concept" and e1["forgotten"]["count"] == 5 and "row_sha256" not in e1["forgotten"]
    assert [e1["signer"]] == keys.read_public(str(operator)) != [e0["signer"]]
    assert keys.read_public(str(run2 / "ledger.pub")) == [e0["signer"], e1["signer"]]
    rows = [r for r in benchmark.split("forget") if r["person"] == person]
    assert not {row_hash(r) for r in rows} & set(e1["forgotten"]["row_fingerprints"])
    assert all(proofs.prove(run2, r)["entry"] == 1 for r in rows)
    assert e1["method"] == "grad_diff" and e1["hyperparameters"]["learning_rate"] == 1e-4
    assert main(["ledger", "verify", str(run2)]) == 0
    assert "ok: 2 entries" in capsys.readouterr().out
    # pinning keys: both operators' keys pass, the second alone does not
    assert main(["ledger", "verify", str(run2), "--trust", str(operator), "--trust", e0["signer"],
                 "--anchor", e0["hash"]]) == 0
    assert main(["ledger", "verify", str(run2), "--trust", str(operator)]) == 1
    assert "entry 0: signed by key" in capsys.readouterr().out
    assert main(["ledger", "verify", str(run2), "--anchor", "f" * 64]) == 1


def test_forged_and_rehashed_entry_fails_verify(runs, tmp_path, capsys):
    run = _copy(runs[1], tmp_path)
    entries = L.read(run)
    entries[1]["forgotten"] = {**entries[1]["forgotten"], "count": 1}  # claim fewer rows were forgotten
    (run / "ledger.jsonl").write_text("".join(L.canonical(e).decode() + "\n" for e in _rehash(entries)))
    assert L.verify_chain(L.read(run))[0] == ["entry 1: signature does not verify (the entry was changed or "
                                              "re-hashed by someone without the signing key)"]
    assert main(["ledger", "verify", str(run)]) == 1
    assert "FAILED: entry 1: signature does not verify" in capsys.readouterr().out


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


@pytest.mark.parametrize("change", ["weights", "config", "tokenizer"])
def test_changed_model_fails(runs, tmp_path, capsys, change):
    run = _copy(runs[1], tmp_path)
    if change == "weights":
        w = run / "model" / "model.safetensors"
        b = bytearray(w.read_bytes())
        b[-3] ^= 1  # a bit of the last weight, not the header
        w.write_bytes(bytes(b))
    else:
        name = "config.json" if change == "config" else "tokenizer_config.json"
        d = json.loads((run / "model" / name).read_text())
        (run / "model" / name).write_text(json.dumps({**d, "llm_forget_test": 1}))
    v = L.verify(run)
    assert v.problems == [f"entry 1: model_after does not match the model in {run / 'model'} "
                          "(the model changed after this entry)"]
    assert main(["ledger", "verify", str(run)]) == 1
    assert "entry 1" in capsys.readouterr().out


def test_version_1_ledger_verifies_as_unsigned_and_migrates(runs, tmp_path, capsys):
    """A ledger written before signing (plain sha256 rows, weights-only model hash, no signature)
    still verifies and says it is unsigned; `ledger migrate` keys its rows and signs it."""
    from llm_forget.data import benchmark
    from llm_forget.data.readers import row_hash
    from llm_forget.models import model_hash

    run = tmp_path / "old"
    shutil.copytree(runs[0] / "model", run / "model")
    rows = benchmark.split("forget")[:3]
    old = [L.chain([], {"version": 1, "operation": "unlearn", "forgotten": {
        "count": 3, "set_sha256": "x", "row_sha256": [row_hash(r) for r in rows]},
        "model_before": None, "model_after": model_hash(run / "model")})]
    (run / "ledger.jsonl").write_text(L.canonical(old[0]).decode() + "\n")
    assert main(["ledger", "verify", str(run)]) == 0
    assert "UNSIGNED" in capsys.readouterr().out
    assert main(["ledger", "migrate", str(run)]) == 0
    assert f"head {old[0]['hash']} -> " in capsys.readouterr().out
    (e,) = L.read(run)
    assert e["version"] == 1 and e["migrated_from"] == old[0]["hash"] and e["signature"]
    assert "row_sha256" not in e["forgotten"] and e["forgotten"]["count"] == 3
    v = L.verify(run)
    assert v.ok and v.unsigned == 0, v.problems
    (run / "row.json").write_text(json.dumps(rows[1]))
    assert main(["ledger", "prove", str(run), "--row", str(run / "row.json")]) == 0
    (run / "proof.json").write_text(capsys.readouterr().out)
    assert main(["ledger", "check-proof", str(run), "--row", str(run / "row.json"), "--proof",
                 str(run / "proof.json")]) == 0
    assert "ok: the row was forgotten in entry 0" in capsys.readouterr().out
    assert main(["ledger", "migrate", str(run)]) == 2  # already keyed and signed


def test_keygen_refuses_to_overwrite_and_bad_keys_are_user_errors(tmp_path, capsys):
    assert main(["ledger", "keygen", str(tmp_path / "k.pem")]) == 0
    assert oct((tmp_path / "k.pem").stat().st_mode & 0o777) == "0o600"
    assert main(["ledger", "keygen", str(tmp_path / "k.pem")]) == 2
    (tmp_path / "bad.pem").write_text("not a key")
    from llm_forget.errors import UserError

    with pytest.raises(UserError, match="not an unencrypted PEM private key"):
        keys.load_signing_key(tmp_path / "bad.pem")
    with pytest.raises(UserError, match="does not exist"):
        keys.load_signing_key(tmp_path / "missing.pem")


def test_missing_ledger_is_a_user_error(tmp_path):
    assert main(["ledger", "verify", str(tmp_path)]) == 2


def test_unlearn_refuses_an_input_model_whose_ledger_does_not_verify(tmp_path, target_path, capsys):
    """The input model's history is verified before any training or writing: one line, exit 2, no output."""
    import shutil

    from llm_forget.cli import main

    model = tmp_path / "model"
    shutil.copytree(target_path, model)
    L.append(model, {"op": 1})
    p = model / "ledger.jsonl"
    p.write_text(p.read_text().replace('"op":1', '"op":7'))
    out = tmp_path / "out"
    assert main(["unlearn", "grad_diff", "--model", str(model), "--output_dir", str(out), "--max_steps", "1"]) == 2
    assert "does not verify (entry 0: content does not match" in capsys.readouterr().err
    assert not out.exists()
    # forgetting by task-vector negation checks it too, before its fine-tunes
    assert main(["edit", "task_vector", "--model", str(model), "--output_dir", str(out)]) == 2
    assert "does not verify (entry 0: content does not match" in capsys.readouterr().err
    assert not out.exists()


def test_an_edit_continues_the_deletion_ledger_of_the_model_it_edits(runs, tmp_path, capsys):
    """Editing an unlearned model keeps its evidence: the edited model's ledger is the input's entries plus one
    "edit" entry (the request fingerprinted, the lineage from run2's model to the edited one), it verifies, and the
    card lists the earlier deletions and the edit, with the edit's metrics and the command that reproduces it."""
    import llm_forget

    run1, run2, _, _ = runs
    before = L.read(run2)
    req = tmp_path / "cf.json"
    req.write_text(json.dumps([{"prompt": "Question: Where was Ada Brask born?\nAnswer:", "subject": "Ada Brask",
                                "target_new": "Lisbon", "ground_truth": "Oslo"}]))
    out = tmp_path / "edited"
    llm_forget.edit(dict(method="rome", model=str(run2 / "model"), requests=str(req), corpus="builtin:train",
                         n_tokens=1500, seq_len=128, layers="1", v_steps=5, n_key_prefixes=2, n_value_prefixes=1,
                         prefix_length=4, output_dir=str(out)))
    entries = L.read(out)
    assert [e["hash"] for e in entries[:-1]] == [e["hash"] for e in before]
    edit = entries[-1]
    assert (edit["operation"], edit["kind"], edit["method"], edit["forgotten"]["count"]) == ("edit", "edit", "rome", 1)
    assert edit["model_before"] == before[-1]["model_after"] and edit["hyperparameters"]["layers"] == "1"
    assert main(["ledger", "verify", str(out)]) == 0
    card = (out / "README.md").read_text()
    res = json.loads((out / "results.json").read_text())
    assert "rome editing" in card and "## What was edited" in card and "Locating and Editing Factual" in card
    assert f"| {before[-1]['index']} | `{before[-1]['request_id']}` |" in card  # the deletion it inherits
    assert f"| Efficacy score (`efficacy_score`) | {res['summary']['efficacy_score']:.4g} |" in card
    assert f"| Reliability (`reliability`) | {res['summary']['reliability']:.4g} |" in card
    assert "Reproduce: `llm-forget edit recipe.yaml`" in card
    capsys.readouterr()
    # an edit that is not kept (restore) leaves no ledger and no card: nothing was served
    llm_forget.edit(dict(method="rome", model=str(run2 / "model"), requests=str(req), corpus="builtin:train",
                         n_tokens=1500, seq_len=128, layers="1", v_steps=5, n_key_prefixes=2, n_value_prefixes=1,
                         prefix_length=4, output_dir=str(tmp_path / "measured"), restore=True))
    assert not (tmp_path / "measured" / "ledger.jsonl").exists() and not (tmp_path / "measured" / "README.md").exists()
