"""Batched v* targets, architecture checks, covariance cache keys, NaN-aware scores and the
lifelong table, on the tiny zoo models (offline, CPU)."""

import math

import pytest
import torch

from llm_forget.errors import UserError


@pytest.fixture(scope="module")
def tiny_requests(target_path):
    """Four retain birthplace questions that tiny-target answers right (different people), each
    with another city as the new answer and the model's own answer as the true one. The subject is the question (the 4-layer
    model recalls at the last prompt token)."""
    from llm_forget.data.benchmark import split
    from llm_forget.data.encode import Encoder
    from llm_forget.editing.requests import EditRequest
    from llm_forget.models import load_model, load_tokenizer

    tok = load_tokenizer(target_path)
    model = load_model(target_path, "float32")
    enc = Encoder(tok)
    reqs, seen = [], set()
    for r in split("retain"):
        if r["person"] in seen or len(reqs) == 4 or r["fact"] != "birthplace":
            continue
        prompt = enc.prompt_text(r["question"])
        with torch.no_grad():
            ids = tok(prompt, return_tensors="pt")["input_ids"]
            old = tok.decode([int(model(input_ids=ids).logits[0, -1].argmax())]).strip()
        seen.add(r["person"])
        if not old or old not in r["answer"]:
            continue
        new = next(x for x in ("Lisbon", "Oslo", "Riga", "Quito") if x not in r["answer"] and x != old)
        reqs.append(EditRequest(prompt=prompt, subject=prompt[len("Question: "):], target_new=new,
                                target_true=old, case_id=r["person"]))
    return model, tok, reqs


@pytest.mark.parametrize("prefix_cache,skip_layers", [(True, True), (True, False), (False, False)])
def test_batched_targets_match_one_by_one_with_one_forward_per_step(tiny_requests, prefix_cache, skip_layers,
                                                                    monkeypatch):
    """Each request's δ from the batched solver equals its one-by-one δ (relative difference
    < 1e-4; float rounding only, measured ~1e-6), and the batch runs one forward per step (plus the
    reference pass and, with the prefix cache, one prefix pass and one pass storing the edited block's
    output) instead of one per request per step. With the layers skipped, the blocks up to the edited
    one run in those set-up passes only, never in a step, and the pass storing the edited block's output
    stops there (the last block never runs in it)."""
    from llm_forget.editing import batched_values
    from llm_forget.editing.batched_values import compute_value_deltas
    from llm_forget.editing.locate import ValueConfig, compute_value_delta, context_prefixes
    from llm_forget.models import arch_for, get_layers

    model, tok, reqs = tiny_requests
    if not skip_layers:
        monkeypatch.setattr(batched_values, "can_skip_layers", lambda base: False)
    arch = arch_for(model)
    prefixes = context_prefixes(model, tok, 2, 4, seed=0)
    cfg = ValueConfig(steps=10, n_prefixes=2, weight_decay=0.5, clamp_norm=4.0, stop_nll=0.5)
    calls, first_block, last_block = [], [], []
    handle = model.base_model.register_forward_pre_hook(lambda *_: calls.append(1))  # passes started
    handle0 = get_layers(model, arch)[0].register_forward_hook(lambda *_: first_block.append(1))
    handle3 = get_layers(model, arch)[3].register_forward_hook(lambda *_: last_block.append(1))
    try:
        single = [compute_value_delta(model, tok, r, 2, prefixes, arch, cfg, "block") for r in reqs]
        n_single = len(calls)
        calls.clear()
        first_block.clear()
        last_block.clear()
        delta, h0, steps = compute_value_deltas(model, tok, reqs, 2, prefixes, arch, cfg, "block", prefix_cache)
        n_batched = len(calls)
    finally:
        handle.remove()
        handle0.remove()
        handle3.remove()
    for i, (d, h) in enumerate(single):
        assert d.norm() > 0
        assert float((d - delta[i]).norm() / d.norm()) < 1e-4
        assert torch.allclose(h, h0[i], rtol=1e-5, atol=1e-5)
    assert n_batched <= cfg.steps + 3
    steps_run = n_batched - 1 - (2 if skip_layers else int(prefix_cache))  # forwards inside the step loop
    assert steps_run == max(steps)
    assert len(first_block) == (3 if skip_layers else n_batched)
    assert len(last_block) == (n_batched - 1 if skip_layers else n_batched)
    # one-by-one: a reference forward and one per step taken for each request, so each request stopped at the
    # same step in both solvers (a request leaves the batch when it would have stopped alone)
    assert n_single == len(reqs) + sum(steps)


def test_batched_and_one_by_one_targets_are_cached_apart(tiny_requests, tmp_path, monkeypatch):
    from llm_forget.editing.locate import ValueConfig
    from llm_forget.editing.memit import value_targets
    from llm_forget.models import arch_for

    monkeypatch.setenv("LLM_FORGET_CACHE", str(tmp_path))
    model, tok, reqs = tiny_requests
    arch, cfg = arch_for(model), ValueConfig(steps=4, n_prefixes=0)
    z1 = value_targets(model, tok, reqs[:2], 2, [""], arch, cfg, progress=False, v_batch=1)
    z2 = value_targets(model, tok, reqs[:2], 2, [""], arch, cfg, progress=False, v_batch=8)
    assert len(list((tmp_path / "targets").rglob("*.safetensors"))) == 4
    assert float((z1 - z2).norm() / z1.norm()) < 1e-4
    assert torch.equal(value_targets(model, tok, reqs[:2], 2, [""], arch, cfg, progress=False, v_batch=8), z2)
    assert len(list((tmp_path / "targets").rglob("*.safetensors"))) == 4


def _tiny_gemma2(vocab):
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    cfg = Gemma2Config(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=64)
    return Gemma2ForCausalLM(cfg).eval()


def test_memit_refuses_a_norm_after_the_mlp_and_accepts_a_plain_residual(tiny_requests, tmp_path, monkeypatch):
    """Gemma 2 normalises the MLP output before adding it: an added r moves the block output by
    far from r, and MEMIT/AlphaEdit targets refuse with a UserError before anything is written.
    Llama and GPT-2 (Conv1D) add it straight in (gain error ~1e-7)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from llm_forget.editing.locate import ValueConfig
    from llm_forget.editing.memit import value_targets
    from llm_forget.editing.residual import residual_gain
    from llm_forget.models import arch_for

    monkeypatch.setenv("LLM_FORGET_CACHE", str(tmp_path))
    model, tok, reqs = tiny_requests
    assert residual_gain(model, 2, arch_for(model)) < 1e-4
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=len(tok))).eval()
    assert residual_gain(gpt2, 1, arch_for(gpt2)) < 1e-4
    gemma = _tiny_gemma2(len(tok))
    arch = arch_for(gemma)
    assert residual_gain(gemma, 1, arch) > 0.1
    before = {k: v.clone() for k, v in gemma.state_dict().items()}
    with pytest.raises(UserError, match="gemma2.*rome"):
        value_targets(gemma, tok, reqs[:1], 1, [""], arch, ValueConfig(steps=2, n_prefixes=0), progress=False)
    assert all(torch.equal(before[k], v) for k, v in gemma.state_dict().items())
    assert not (tmp_path / "targets").exists()


def test_covariance_cache_key_follows_seq_len_and_bos(target_path, tmp_path, monkeypatch):
    """C over the same corpus tokens changes with the sequence length and with a bos token leading
    each sequence; each gets its own cache file, and an identical call reads its file back."""
    from transformers import AutoTokenizer

    from llm_forget.editing.covariance import second_moments
    from llm_forget.models import load_model, load_tokenizer

    monkeypatch.setenv("LLM_FORGET_CACHE", str(tmp_path))
    model = load_model(target_path, "float32")
    tok = load_tokenizer(target_path)
    tok_bos = AutoTokenizer.from_pretrained(target_path, add_bos_token=True)
    assert tok_bos("a")["input_ids"][0] == tok_bos.bos_token_id != tok("a")["input_ids"][0]
    if tok_bos.pad_token_id is None:
        tok_bos.pad_token = tok.pad_token
    run = lambda t, s: second_moments(model, t, [1], "builtin:train", 600, s, arch=None)[1]  # noqa: E731
    files = lambda: sorted((tmp_path / "stats").rglob("*.safetensors"))  # noqa: E731
    c32 = run(tok, 32)
    c64 = run(tok, 64)
    assert len(files()) == 2
    c32b = run(tok_bos, 32)
    assert len(files()) == 3
    assert float((c32 - c64).norm() / c32.norm()) > 1e-3
    assert float((c32 - c32b).norm() / c32.norm()) > 1e-3
    assert torch.equal(run(tok, 32), c32)
    assert len(files()) == 3


def test_counterfact_score_is_nan_and_says_why_when_a_component_is_missing():
    from llm_forget.editing.metrics_counterfact import counterfact_score

    assert counterfact_score(1.0, 0.5, 0.5)["counterfact_score"] == pytest.approx(3 / (1 + 2 + 2))
    out = counterfact_score(1.0, float("nan"), 0.5)
    assert math.isnan(out["counterfact_score"])
    assert out["counterfact_score_missing"] == ["paraphrase"]


def test_lifelong_table_after_each_batch(tiny_requests):
    """Sequential MEMIT over two batches of two requests: three rows (unedited, after 1, after 2). Each row is the
    model right after its batch: the first batch's efficacy is what writing that batch alone gives, the second's and
    the earlier batch's are the final model's; each batch's efficacy rises from the unedited model's 0 (to 1 on the
    builds of seeds 0-3; on seed 13's, one of the four requests is not written even alone, so the bar is > 0)."""
    from llm_forget.editing.config import EditConfig
    from llm_forget.editing.lifelong import efficacy
    from llm_forget.editing.run import apply_edits

    model, tok, reqs = tiny_requests
    assert efficacy(model, tok, reqs) == 0.0  # the true answers are the model's own
    cfg = EditConfig(method="memit", output_dir="-", requests="-", layers="1-2", corpus="builtin:train",
                     n_tokens=2000, seq_len=128, n_key_prefixes=0, n_value_prefixes=0, v_steps=12, mom2_weight=1.0,
                     mode="sequential", batch_size=2, batch_eval=True, targets_cache=False)
    _, first, _ = apply_edits(model, tok, reqs[:2], cfg, progress=False)  # the first batch alone
    try:
        after_first = efficacy(model, tok, reqs[:2])
    finally:
        first.restore()
    _, res, _ = apply_edits(model, tok, reqs, cfg, progress=False)
    try:
        rows = res.per_batch
        assert [r["batch"] for r in rows] == [0, 1, 2] and [r["n_edits"] for r in rows] == [0, 2, 4]
        assert rows[0]["efficacy_first"] == 0.0
        assert rows[1]["efficacy_latest"] == after_first > 0.0
        assert rows[2]["efficacy_latest"] == efficacy(model, tok, reqs[2:]) > 0.0
        assert math.isnan(rows[1]["efficacy_earlier"])
        assert rows[2]["efficacy_earlier"] == efficacy(model, tok, reqs[:2])
    finally:
        res.restore()


def test_lifelong_neighbourhood_covers_the_whole_first_batch(tiny_requests):
    """The stream's neighbourhood is measured on every first-batch request's neighbour prompts (12
    here), not on a sample of ten: steps of 1/12 rather than 1/10 of a sample."""
    from dataclasses import replace

    from llm_forget.editing.lifelong import StreamTable, neighbourhood

    model, tok, reqs = tiny_requests
    others = reqs[1:] + reqs[:1]  # each request's neighbour: another person's question and the model's answer
    many = [replace(r, neighbourhood=[(o.prompt, o.target_true)], case_id=f"{r.case_id}#{k}")
            for k in range(3) for r, o in zip(reqs, others)]
    table = StreamTable(model, tok, many, fluency_prompts=0)
    assert len(many) == 12 and table.neigh == many
    assert table.rows[0]["neighbourhood"] == neighbourhood(model, tok, many)
    assert table.rows[0]["neighbourhood"] == 1.0  # the unedited model prefers each neighbour's own answer
    assert len(StreamTable(model, tok, many, n_neighbour_requests=2, fluency_prompts=0).neigh) == 2


@pytest.mark.parametrize("kind", ["qwen2", "mistral", "phi3", "qwen2-mixed"])
def test_batched_targets_on_other_decoders_match_one_by_one(tiny_path, kind):
    """On randomly initialised decoders of the other types the prefix cache and the layer skip apply
    to, the batched δ (steps starting after the edited block) equals the one-by-one δ (relative
    difference < 1e-4). A Qwen2 whose layers mix full and sliding attention with a window shorter
    than the rows runs every token through every block (the per-row cache has no sliding layers; it
    used to fail there with a mask size mismatch) and still matches."""
    import transformers
    from transformers import AutoTokenizer

    from llm_forget.editing import batched_values
    from llm_forget.editing.locate import ValueConfig, compute_value_delta
    from llm_forget.editing.requests import EditRequest
    from llm_forget.models import arch_for

    tok = AutoTokenizer.from_pretrained(tiny_path)
    name = {"qwen2": "Qwen2", "mistral": "Mistral", "phi3": "Phi3", "qwen2-mixed": "Qwen2"}[kind]
    extra = ({"use_sliding_window": True, "sliding_window": 4, "max_window_layers": 2,
              "layer_types": ["full_attention", "full_attention", "sliding_attention", "sliding_attention"]}
             if kind == "qwen2-mixed" else {})
    config = getattr(transformers, f"{name}Config")(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, pad_token_id=tok.pad_token_id, **extra)
    torch.manual_seed(0)
    model = getattr(transformers, f"{name}ForCausalLM")(config).eval()
    mixed = kind == "qwen2-mixed"
    assert batched_values.can_skip_layers(model.model) == (not mixed)
    assert batched_values.can_cache_prefix(model.model, 20) == (not mixed)
    reqs = [EditRequest(prompt=f"The city where {s} was born is", subject=s, target_new=t)
            for s, t in (("Ada Brask", "Lisbon"), ("Cora Dunmore", "Oslo"), ("Ivo Lund", "Riga"))]
    prefixes = ["Once upon a time. ", "In the news today, "]
    cfg = ValueConfig(steps=6, n_prefixes=2, clamp_norm=4.0, stop_nll=1e-3)
    arch = arch_for(model)
    delta, *_ = batched_values.compute_value_deltas(model, tok, reqs, 1, prefixes, arch, cfg, "block", True)
    for i, r in enumerate(reqs):
        d, _ = compute_value_delta(model, tok, r, 1, prefixes, arch, cfg, "block")
        assert d.norm() > 0
        assert float((d - delta[i]).norm() / d.norm()) < 1e-4
