"""Integration tests of locate-then-edit on tiny models (offline, CPU)."""

import json

import pytest
import torch

from llm_forget.errors import UserError


def _greedy(model, tok, prompt):
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        nxt = model(input_ids=ids).logits[0, -1].argmax()
    return tok.decode([int(nxt)]).strip()


def test_unknown_architecture_error_names_the_override_keys():
    from types import SimpleNamespace

    from llm_forget.models import arch_for

    model = SimpleNamespace(config=SimpleNamespace(model_type="mystery"))
    with pytest.raises(UserError, match="layers.*mlp_out"):
        arch_for(model)
    assert arch_for(model, {"layers": "blocks", "mlp_out": "ff.out"}).mlp_out == "ff.out"


def test_gpt2_conv1d_rome_through_the_api(tmp_path, tiny_path):
    """A randomly initialised GPT-2 (Conv1D, weight stored in x out) edited by `llm_forget.edit`:
    only the chosen layer's c_proj changes, and its change maps k* to exactly δ (Ŵk* − Wk* = δ)."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    import llm_forget
    from llm_forget.editing.locate import compute_keys, context_prefixes
    from llm_forget.editing.requests import EditRequest
    from llm_forget.models import arch_for

    tok = AutoTokenizer.from_pretrained(tiny_path)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=64, n_layer=3, n_head=2,
                                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id))
    mdir = tmp_path / "gpt2"
    model.save_pretrained(mdir)
    tok.save_pretrained(mdir)
    row = {"case_id": 7, "prompt": "Question: Where was Ada Brask born?\nAnswer:", "subject": "Ada Brask",
           "target_new": "Lisbon", "ground_truth": "Oslo", "rephrase_prompt": "Question: Where is Ada Brask from?\nAnswer:",
           "locality_prompt": "Question: Where was Cora Dunmore born?\nAnswer:", "locality_ground_truth": "Oslo"}
    req_file = tmp_path / "cf.json"
    req_file.write_text(json.dumps([row]))
    llm_forget.edit(dict(method="rome", model=str(mdir), requests=str(req_file), corpus="builtin:train",
                         n_tokens=1500, seq_len=128, layers="1", v_steps=5, n_key_prefixes=2,
                         n_value_prefixes=1, prefix_length=4, output_dir=str(tmp_path / "run")))
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert set(res["post"]) >= {"counterfact", "zsre"} and "neighbourhood_score" in res["pre"]["counterfact"]
    before, after = load_file(str(mdir / "model.safetensors")), load_file(str(tmp_path / "run" / "model" / "model.safetensors"))
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == ["transformer.h.1.mlp.c_proj.weight"]
    # Conv1D stores W transposed: ΔW (out x in) = (after - before).T
    dW = (after[changed[0]] - before[changed[0]]).T.double()
    # k* with the same seeded prefixes the run sampled (keys at layer 1 are inputs of the edited
    # projection, so the edit does not change them)
    side = tok.padding_side
    prefixes = context_prefixes(model, tok, 2, 4, seed=0)
    assert tok.padding_side == side  # sampled with left padding, the shared tokenizer left as it was
    req = EditRequest(prompt=row["prompt"], subject=row["subject"], target_new="Lisbon")
    k = compute_keys(model, tok, [req], [1], prefixes, arch_for(model))[1][0]
    assert res["log"][0]["delta_norm"] > 0
    assert float((dW @ k.double()).norm()) == pytest.approx(res["log"][0]["delta_norm"], rel=1e-3)


@pytest.fixture(scope="module")
def tiny_fact(target_path):
    """A retain person's birthplace question on tiny-target, with another city as the new answer.
    The 4-layer tiny model recalls a person's facts at the last prompt token, not at the name, so
    the edit's 'subject' is the question itself (the key is read at its last token)."""
    from llm_forget.data.benchmark import split
    from llm_forget.data.encode import Encoder
    from llm_forget.editing.requests import EditRequest
    from llm_forget.models import load_model, load_tokenizer

    tok = load_tokenizer(target_path)
    model = load_model(target_path, "float32")
    enc = Encoder(tok)
    rows = [r for r in split("retain") if r["fact"] == "birthplace"]
    for r in rows:
        prompt = enc.prompt_text(r["question"])
        old = _greedy(model, tok, prompt)
        if old and old in r["answer"]:
            new = next(x for x in ("Lisbon", "Oslo", "Riga") if x not in r["answer"])
            req = EditRequest(prompt=prompt, subject=prompt[len("Question: "):], target_new=new,
                              target_true=old, case_id=r["person"])
            return model, tok, req, old
    pytest.fail("tiny-target answers no retain person's birthplace correctly, though it was fine-tuned on all of "
                "them (zoo.TINY_FT memorises every fact)")


@pytest.mark.parametrize("method,layers", [("rome", "2"), ("memit", "1-2")])
def test_locate_then_edit_changes_the_tiny_target_answer(tiny_fact, method, layers):
    from llm_forget.editing.config import EditConfig
    from llm_forget.editing.run import apply_edits

    model, tok, req, old = tiny_fact
    cfg = EditConfig(method=method, output_dir="-", requests="-", layers=layers, corpus="builtin:train",
                     n_tokens=2000, seq_len=128, n_key_prefixes=0, n_value_prefixes=0, mom2_weight=1.0,
                     v_steps=12)
    _, res, timings = apply_edits(model, tok, [req], cfg, progress=False)
    try:
        assert _greedy(model, tok, req.prompt) == req.target_new  # was `old`
    finally:
        res.restore()
    assert _greedy(model, tok, req.prompt) == old  # restore() puts the original weights back


def test_value_targets_are_cached_per_model_and_settings(tiny_fact, tmp_path, monkeypatch, caplog):
    """A second run reads every z from disk (same values); other v* settings or other weights miss."""
    import logging

    from llm_forget.editing.locate import ValueConfig
    from llm_forget.editing.memit import value_targets
    from llm_forget.models import arch_for, get_mlp_out

    monkeypatch.setenv("LLM_FORGET_CACHE", str(tmp_path))
    model, tok, req, _ = tiny_fact
    arch, cfg = arch_for(model), ValueConfig(steps=6, n_prefixes=0)
    with caplog.at_level(logging.INFO, logger="llm_forget.editing.memit"):
        z1 = value_targets(model, tok, [req], 2, [""], arch, cfg, progress=False)
        assert "read from the cache" not in caplog.text
        assert len(list((tmp_path / "targets").rglob("*.safetensors"))) == 1
        z2 = value_targets(model, tok, [req], 2, [""], arch, cfg, progress=False)
        assert "1 of 1 targets read from the cache" in caplog.text
        assert torch.equal(z1, z2)
        caplog.clear()
        value_targets(model, tok, [req], 2, [""], arch, ValueConfig(steps=7, n_prefixes=0), progress=False)
        assert "read from the cache" not in caplog.text  # other v* settings
        w = get_mlp_out(model, 0, arch).weight
        orig = w.detach().clone()
        with torch.no_grad():
            w.add_(1e-3)
        try:
            value_targets(model, tok, [req], 2, [""], arch, cfg, progress=False)
        finally:
            with torch.no_grad():
                w.copy_(orig)  # the module-scoped model must come back bit for bit
        assert "read from the cache" not in caplog.text  # edited weights: a new model hash
    assert len(list((tmp_path / "targets").rglob("*.safetensors"))) == 3


def test_alphaedit_sequential_updates_stay_in_the_null_space(tiny_fact):
    from llm_forget.editing.alphaedit import AlphaEditState, alphaedit_edit
    from llm_forget.editing.covariance import second_moments
    from llm_forget.editing.locate import ValueConfig
    from llm_forget.editing.requests import EditRequest
    from llm_forget.models import arch_for, get_mlp_out

    model, tok, req, _ = tiny_fact
    arch = arch_for(model)
    Cs = second_moments(model, tok, [1, 2], "builtin:train", n_tokens=2000, seq_len=128)
    state = AlphaEditState.from_moments(Cs, 2e-2)
    w0 = {l: get_mlp_out(model, l, arch).weight.detach().clone() for l in (1, 2)}
    req2 = EditRequest(prompt=req.prompt, subject=req.subject, target_new="Riga" if req.target_new != "Riga" else "Oslo")
    res = alphaedit_edit(model, tok, [req, req2], [1, 2], state, [""], [""], arch,
                         ValueConfig(steps=8, n_prefixes=0), batch_size=1, progress=False)
    try:
        assert set(state.KpKp) == {1, 2}  # keys of the first edit were kept for the second
        for l in (1, 2):
            dW = get_mlp_out(model, l, arch).weight.detach().double() - w0[l].double()
            assert float(dW.norm()) > 0
            P = state.P[l]
            assert float((dW - dW @ P).norm()) < 1e-5 * float(dW.norm()) + 1e-6
    finally:
        res.restore()


def test_lora_edit_changes_the_answer_and_the_base_is_untouched(tiny_fact):
    import copy

    from llm_forget.editing.lora_edit import LoraEditConfig, lora_edit

    model, tok, req, old = tiny_fact
    base = copy.deepcopy(model)
    req.neighbourhood = [("Question: Where was Ada Brask born?\nAnswer:", "Oslo")]
    peft_model = lora_edit(base, tok, [req], LoraEditConfig(r=4, steps=25, lr=1e-2, layers=[1, 2]), progress=False)
    req.neighbourhood = []
    assert _greedy(peft_model, tok, req.prompt) == req.target_new
    with peft_model.disable_adapter():
        assert _greedy(peft_model, tok, req.prompt) == old


def test_layer_sweep_reports_each_layer(tiny_fact):
    from llm_forget.editing.run import layer_sweep

    model, tok, req, old = tiny_fact
    rows = layer_sweep(model, tok, [req], [1, 2], "builtin:train", n_tokens=2000, seq_len=128, n_key_prefixes=0,
                       n_value_prefixes=0, v_steps=12)
    assert [r["layer"] for r in rows] == [1, 2]
    assert rows[1]["efficacy_score"] == 1.0 and rows[1]["reliability"] == 1.0
    assert _greedy(model, tok, req.prompt) == old  # each layer's edit was undone
