"""SISA exact unlearning: the aggregation formula, the layout, and the proof that forgetting
equals retraining the shard from scratch without the deleted rows."""

import json
import math

import pytest
import torch

from llm_forget.cli import main
from llm_forget.exact import sisa
from llm_forget.reporting import proofs


def test_aggregate_logprobs_hand_computed():
    p = torch.tensor([[0.5, 0.5], [0.9, 0.1]]).log()  # two shards, vocabulary of two
    # mixture: (0.5 + 0.9)/2, (0.5 + 0.1)/2
    assert torch.allclose(sisa.aggregate_logprobs(p, "prob_mean").exp(), torch.tensor([0.7, 0.3]))
    # normalised geometric mean: sqrt(.45) : sqrt(.05) = 3 : 1
    assert torch.allclose(sisa.aggregate_logprobs(p, "logprob_mean").exp(), torch.tensor([0.75, 0.25]))
    with pytest.raises(ValueError):
        sisa.aggregate_logprobs(p, "max")


def test_assign_partitions_every_row_once():
    layout = sisa.assign(10, shards=2, slices=2, seed=3)
    assert [[len(s) for s in sh] for sh in layout] == [[3, 2], [3, 2]]
    assert sorted(i for sh in layout for s in sh for i in s) == list(range(10))
    assert layout == sisa.assign(10, 2, 2, 3) != sisa.assign(10, 2, 2, 4)


def test_stage_batches_depend_only_on_their_stage():
    a = sisa.stage_batches(list(range(7)), stage=1, epochs=2, batch_size=3, seed=0, shard=0)
    assert [len(b) for b in a] == [3, 3, 1, 3, 3, 1]
    assert sorted(a[0] + a[1] + a[2]) == list(range(7))
    assert a == sisa.stage_batches(list(range(7)), 1, 2, 3, 0, 0)
    cfg = sisa.SisaConfig(epochs_per_slice=1, batch_size=6)
    assert sisa.stage_steps([[1] * 6, [1] * 4, [1] * 6], cfg) == [1, 2, 3]  # 6, 10, 16 rows


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_path):
    from llm_forget.data import benchmark

    d = tmp_path_factory.mktemp("sisa")
    rows = benchmark.split("train")[:36]
    (d / "train.json").write_text(json.dumps(rows))
    r = sisa.train(None, model=tiny_path, data=str(d / "train.json"), holdout="none", output_dir=str(d / "run"),
                   shards=2, slices=3, epochs_per_slice=1, batch_size=6, lora_r=4, learning_rate=1e-3,
                   lora_target_modules="q_proj,v_proj,down_proj", eval_suite="none")
    return d, r, rows


def _bytes(run):
    return {p.relative_to(run).as_posix(): p.read_bytes() for p in (run / "shards").rglob("*.safetensors")}


def test_forget_equals_retraining_the_shard_from_scratch(trained, capsys):
    from safetensors.torch import load_file

    from llm_forget.data.readers import row_hash
    from llm_forget.reporting import ledger

    d, r, rows = trained
    run = d / "run"
    assert r["steps"] == 12  # per shard: 18 rows in slices of 6, batch 6 -> 1 + 2 + 3 steps
    state = json.loads((run / "sisa_state.json").read_text())
    by_hash = {row_hash(x): x for x in rows}
    victims = state["layout"][0][1][:2]  # two rows of shard 0, slice 1
    (d / "req.jsonl").write_text(json.dumps({"kind": "items", "rows": [by_hash[h] for h in victims]}) + "\n")
    before = _bytes(run)
    assert main(["sisa", "forget", str(run), "--request", str(d / "req.jsonl")]) == 0
    assert "5 steps vs 12 for full retraining" in capsys.readouterr().out
    after = _bytes(run)
    # shard 1 untouched; shard 0 untouched before the first affected slice, retrained after it
    for name in before:
        same = before[name] == after[name]
        assert same == (name.startswith("shards/shard_01/") or name in ("shards/shard_00/stage_00.safetensors",
                                                                         "shards/shard_00/stage_01.safetensors"))
    state = json.loads((run / "sisa_state.json").read_text())
    assert not set(victims) & {h for sh in state["layout"] for s in sh for h in s}
    assert state["deleted"] == 2 and not set(victims) & set((run / "sisa_state.json").read_text().split('"'))
    cost = state["operations"][-1]
    assert (cost["steps_retrained"], cost["full_retrain_steps"]) == (5, 12)  # stages of 10 and 16 rows
    # the proof: equal to training shard 0 from scratch without the deleted rows
    scratch = sisa.retrain_shard(run, 0)
    got = load_file(str(run / "model" / "shard_00.safetensors"))
    assert set(got) == set(scratch) and len(got) == 4 * 3 * 2  # 4 layers x 3 modules x (A, B)
    assert all(torch.equal(got[k], scratch[k]) for k in got)  # bit for bit on CPU
    # the ledger recorded the deletion by keyed fingerprint, is signed, and verifies against the new model
    v = ledger.verify(run)
    assert v.ok, v.problems
    assert v.unsigned == 0 and len(v.signers) == 1
    e = ledger.read(run)[-1]
    assert e["operation"] == "sisa_forget" and e["forgotten"]["count"] == 2 and "row_sha256" not in e["forgotten"]
    assert not set(victims) & set(e["forgotten"]["row_fingerprints"])
    assert e["cost"]["steps_retrained"] == 5
    for h in victims:  # the operator can prove each deletion to whoever holds the row
        proof = proofs.prove(run, by_hash[h])
        assert proof["entry"] == e["index"]
        assert proofs.check(run, by_hash[h], proof).startswith(f"the row was forgotten in entry {e['index']}")


def test_duplicated_row_is_deleted_from_every_shard_that_trained_on_it(tmp_path, tiny_path):
    """A row present twice, once in each shard: forgetting it retrains both shards, and each equals
    that shard trained from scratch on its remaining rows, bit for bit."""
    from safetensors.torch import load_file

    from llm_forget.data import benchmark
    from llm_forget.data.readers import row_hash
    from llm_forget.exact.layout import places
    from llm_forget.reporting import ledger

    rows = benchmark.split("train")[:16]
    layout = sisa.assign(16, shards=2, slices=2, seed=0)
    i, j = layout[0][1][0], layout[1][0][0]  # shard 0 slice 1, shard 1 slice 0
    rows[j] = dict(rows[i])
    (tmp_path / "train.json").write_text(json.dumps(rows))
    (tmp_path / "holdout.json").write_text(json.dumps(benchmark.split("holdout")[:6]))
    sisa.train(None, model=tiny_path, data=str(tmp_path / "train.json"), holdout=str(tmp_path / "holdout.json"),
               output_dir=str(tmp_path / "run"), shards=2, slices=2, epochs_per_slice=1, batch_size=4, lora_r=2,
               learning_rate=1e-3, lora_target_modules="q_proj,v_proj")
    run = tmp_path / "run"
    h = row_hash(rows[i])
    state = json.loads((run / "sisa_state.json").read_text())
    assert places(state["layout"])[h] == [(0, 1), (1, 0)]
    before = _bytes(run)
    (tmp_path / "req.json").write_text(json.dumps({"kind": "items", "rows": [rows[i]]}))
    cost = sisa.forget(run, str(tmp_path / "req.json"))
    assert cost["shards_retrained"] == [0, 1]
    state = json.loads((run / "sisa_state.json").read_text())
    assert h not in {x for sh in state["layout"] for s in sh for x in s}
    assert state["operations"][-1]["copies_deleted"] == 2
    after = _bytes(run)
    # shard 0 keeps stages 0..1 (before slice 1), shard 1 only its initialisation: every later stage changed
    unchanged = {n for n in before if before[n] == after[n]}
    assert unchanged == {"shards/shard_00/stage_00.safetensors", "shards/shard_00/stage_01.safetensors",
                         "shards/shard_01/stage_00.safetensors"}
    for k in (0, 1):
        got = load_file(str(run / "model" / f"shard_{k:02d}.safetensors"))
        scratch = sisa.retrain_shard(run, k)
        assert set(got) == set(scratch) and all(torch.equal(got[n], scratch[n]) for n in got)
    v = ledger.verify(run)
    assert v.ok, v.problems
    # the card: a SISA folder is not a peft adapter; each evaluated set is its own dataset
    from test_card import assert_no_local_path, assert_valid_card

    card, evals = assert_valid_card(run)
    assert card.data.library_name is None and card.data.base_model == "tiny"
    by_set = {e.dataset_split: (e.dataset_type, e.dataset_name) for e in evals}
    req = ledger.read(run)[-1]["request_id"]
    assert by_set == {"forget": ("llm_forget/deletion-request", f"deletion request {req}"),
                      "retain": ("json", "train.json"), "holdout": ("json", "holdout.json")}
    assert_no_local_path((run / "README.md").read_text(), tmp_path)


def test_aggregate_model_forward_generate_save_load(trained, tmp_path):
    from transformers import AutoTokenizer

    d, _, rows = trained
    m = sisa.SisaModel.from_pretrained(d / "run" / "model")
    tok = AutoTokenizer.from_pretrained(d / "run" / "model")
    x = tok(["Question: " + rows[0]["question"] + "\nAnswer:"], return_tensors="pt")
    with torch.no_grad():
        out = m(**x)
        per_shard = m.shard_logprobs(x["input_ids"], x["attention_mask"])
    assert per_shard.shape[0] == 2
    assert torch.allclose(out.logits, sisa.aggregate_logprobs(per_shard, "logprob_mean"))
    assert torch.allclose(out.logits.exp().sum(-1), torch.ones(1, x["input_ids"].shape[1]), atol=1e-5)
    gen = m.generate(**x, max_new_tokens=5)
    assert gen.shape[1] <= x["input_ids"].shape[1] + 5 and torch.equal(gen[:, :x["input_ids"].shape[1]], x["input_ids"])
    m.save_pretrained(tmp_path / "copy", tok)
    m2 = sisa.SisaModel.from_pretrained(tmp_path / "copy")
    with torch.no_grad():
        assert torch.equal(m2(**x).logits, out.logits)
    with torch.no_grad():
        assert math.isfinite(float(m(**x, labels=x["input_ids"]).loss))


def test_forget_of_unknown_rows_is_a_user_error(trained, tmp_path):
    (tmp_path / "r.json").write_text(json.dumps({"kind": "items", "rows": [{"question": "q?", "answer": "nope"}]}))
    assert main(["sisa", "forget", str(trained[0] / "run"), "--request", str(tmp_path / "r.json")]) == 2
