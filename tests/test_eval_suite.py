"""Integration tests of the evaluation suite on the tiny zoo models."""

import json
import math
import threading

import pytest
import torch
import torch.nn.functional as F

from llm_forget.data.encode import Encoder
from llm_forget.data.readers import read_rows
from llm_forget.errors import UserError
from llm_forget.evaluation.lanes import Lanes


@pytest.fixture(scope="module")
def target(target_path):
    from llm_forget.models import load_model, load_tokenizer

    return load_model(target_path), load_tokenizer(target_path)


@pytest.fixture(scope="module")
def sets():
    return {k: read_rows(f"builtin:{k}") for k in ("forget", "retain", "holdout")}


def _seqs(tok, rows):
    enc = Encoder(tok)
    out = []
    for r in rows:
        out.append(enc.row(r))
        out += [enc.qa(r["question"], p) for p in r["perturbed_answer"]]
    return out


def test_masks_prompt_and_padding_excluded(target, sets):
    """Scored NLL equals a hand computation on answer tokens only, in a padded batch."""
    from llm_forget.data.encode import pad
    from llm_forget.evaluation.scoring import score_sequences

    model, tok = target
    enc = Encoder(tok)
    seqs = [enc.row(r) for r in sets["forget"][:6]]
    got = score_sequences(model, seqs, tok.pad_token_id, batch_size=6)
    for s, g in zip(seqs, got):
        b = pad([s], tok.pad_token_id)
        with torch.no_grad():
            logits = model(input_ids=b["input_ids"]).logits[0, :-1]
        y = b["labels"][0, 1:]
        m = y != -100
        assert int(m.sum()) < len(s["input_ids"]) - 1  # the prompt really is excluded
        want = float(F.cross_entropy(logits[m], y[m]))
        assert g["nll"] == pytest.approx(want, abs=1e-5)
        assert g["n_tokens"] == int(m.sum())


def test_batch_size_does_not_change_numbers(target, sets):
    from llm_forget.evaluation.scoring import score_sequences

    model, tok = target
    seqs = _seqs(tok, sets["forget"][:10] + sets["holdout"][:10])
    runs = [score_sequences(model, seqs, tok.pad_token_id, batch_size=b) for b in (1, 7, 64)]
    for other in runs[1:]:
        _assert_same_rows(runs[0], other)


def test_encoder_tokenizes_in_batches_with_the_ids_of_one_by_one(target, sets):
    """Encoder.rows tokenizes all prompts and answers in two calls; the ids and labels are those
    of tokenizing each prompt and answer alone, question/answer and text rows mixed, in order."""
    _, tok = target
    enc = Encoder(tok, max_length=40)
    rows = sets["forget"][:5] + [{"text": "a plain text row"}] + sets["retain"][:3]
    got = enc.rows(rows)
    for r, g in zip(rows, got):
        if "question" in r:
            p = tok(f"Question: {r['question']}\nAnswer:")["input_ids"]
            a = tok(" " + r["answer"].strip(), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            ids, labels = (p + a)[:40], ([-100] * len(p) + a)[:40]
        else:
            ids = labels = tok(r["text"])["input_ids"]
        assert g == {"input_ids": ids, "labels": labels}
    assert enc.truncated == sum(1 for r, g in zip(rows, got) if len(g["input_ids"]) == 40)


def test_without_eos_labels_leaves_only_the_closing_eos_out_of_the_loss(target, sets):
    """finetune(answer_eos=False), used by the task-vector reinforcement: ids unchanged, the eos
    label IGNORE, every other answer label kept."""
    from llm_forget.data.encode import IGNORE, without_eos_labels

    _, tok = target
    items = Encoder(tok).rows(sets["forget"][:3])
    got = without_eos_labels(items, tok.eos_token_id)
    for e, g in zip(items, got):
        assert g["input_ids"] == e["input_ids"] and e["labels"][-1] == tok.eos_token_id
        assert g["labels"] == e["labels"][:-1] + [IGNORE]


def _assert_same_rows(a, b, tol=1e-5):
    """Equal up to float32 rounding of another batch shape. Min-K%++ z-scores divide a difference of
    log-probs (rounding ~1e-6) by the spread σ_t of log p, which can be ~0.05 at a confident position:
    their rounding reaches ~2e-5 (batch sizes 1, 7 and 64 on the builds of seeds 0-4: at most 2.5e-5;
    before vocab_moments summed around μ_t, float32 cancellation gave 1.5e-3 on the seed-4 build)."""
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            t = 1e-4 if k.startswith("minkpp") else tol
            assert x[k] == pytest.approx(y[k], rel=t, abs=t), k


def _gpt2(tok, seed=0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=256, n_embd=64, n_layer=2, n_head=2,
                                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)).eval()


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_shared_prompt_scoring_equals_whole_sequences(target, sets, arch):
    """Each prompt runs once and its answers continue its KV cache, at their own positions: every
    number equals the whole-sequence pass (to 1e-5) on Llama (rotary) and GPT-2 (learned
    positions, Conv1D), with answers of many lengths in one batch."""
    from llm_forget.evaluation.scoring import batch_metrics, score_sequences
    from llm_forget.evaluation.shared_prompt import prefix_groups, score_shared

    model, tok = target
    model = model if arch == "llama" else _gpt2(tok)
    seqs = _seqs(tok, sets["forget"][:8] + sets["holdout"][:4])
    full = [i % 3 == 0 for i in range(len(seqs))]
    pp = arch == "llama"  # Min-K%++ divides by the spread of p: near zero for an untrained model's flat p
    groups = prefix_groups(seqs)
    assert len(groups) == 12 and sorted(sum(groups.values(), [])) == list(range(len(seqs)))
    shared = score_shared(model, seqs, groups, tok.pad_token_id, 5,
                          lambda lg, tg, idx: batch_metrics(lg, tg, minkpp=pp, full=[full[i] for i in idx]), chunk=7)
    assert shared is not None  # the cached path really ran
    whole = score_sequences(model, seqs, tok.pad_token_id, 5, minkpp=pp, full=full, share_prompts=False)
    _assert_same_rows(shared, whole)
    with Lanes(2, 1) as lanes:  # batches side by side, chunk c's continuations beside chunk c+1's prompts
        _assert_same_rows(score_shared(model, seqs, groups, tok.pad_token_id, 5,
                                       lambda lg, tg, idx: batch_metrics(lg, tg, minkpp=pp, full=[full[i] for i in idx]),
                                       chunk=7, lanes=lanes), whole)
    _assert_same_rows(score_sequences(model, seqs, tok.pad_token_id, 64, minkpp=pp, full=full), whole)
    # a second model on some rows (the retrained model's KL on the answers) continues its own prompt cache
    other = _gpt2(tok, seed=1) if arch == "gpt2" else _llama_other(model.config.vocab_size)
    mine = [i for i in range(len(seqs)) if i % 4 == 0]
    kw = dict(minkpp=pp, full=full, other=other, other_rows=mine)
    shared = score_sequences(model, seqs, tok.pad_token_id, 5, **kw)
    alone = score_sequences(model, seqs, tok.pad_token_id, 5, share_prompts=False, **kw)
    _assert_same_rows(shared, alone)
    assert [i for i, r in enumerate(shared) if "kl_other" in r] == mine
    assert min(shared[i]["kl_other"] for i in mine) > 1e-3  # two different models: the KL is not zero
    assert [r.get("kl_other") for r in whole] == [None] * len(seqs)


def _llama_other(vocab_size):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1)
    return LlamaForCausalLM(LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=2, max_position_embeddings=256)).eval()


def test_shared_prompts_need_a_plain_cache_and_repeated_prompts(target, sets):
    """A sliding-window cache (Mistral) or prompts that do not repeat: every sequence runs whole."""
    from transformers import MistralConfig, MistralForCausalLM

    from llm_forget.evaluation.scoring import batch_metrics, score_sequences
    from llm_forget.evaluation.shared_prompt import prefix_groups, score_shared

    _, tok = target
    torch.manual_seed(0)
    mistral = MistralForCausalLM(MistralConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                               num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                                               sliding_window=16)).eval()
    seqs = _seqs(tok, sets["forget"][:4])
    assert score_shared(mistral, seqs, prefix_groups(seqs), tok.pad_token_id, 4, batch_metrics) is None
    _assert_same_rows(score_sequences(mistral, seqs, tok.pad_token_id, 4),
                      score_sequences(mistral, seqs, tok.pad_token_id, 4, share_prompts=False), tol=0)
    enc = Encoder(tok)
    assert prefix_groups([enc.row(r) for r in sets["forget"][:6]]) is None  # one answer per prompt
    assert prefix_groups([enc.text("plain text rows have no prompt")] * 4) is None


def test_generation_batch_invariant_and_left_padded(target, sets):
    from llm_forget.evaluation.generation import greedy

    model, tok = target
    enc = Encoder(tok)
    rows = sets["forget"][:12]
    prompts = [enc.prompt_ids(r["question"]) for r in rows]
    caps = [24] * len(rows)
    a = greedy(model, tok, prompts, caps, batch_size=1, stop_strings=["\nQuestion:"])
    b = greedy(model, tok, prompts, caps, batch_size=12, stop_strings=["\nQuestion:"])
    assert a == b
    # the memorising model reproduces its answers
    from llm_forget.evaluation.generation import rouge_l

    assert sum(rouge_l(t, r["answer"])[0] for t, r in zip(a, rows)) / len(rows) > 0.8


@pytest.mark.parametrize("compact_at", [0.0, 0.25, 1.0])
def test_greedy_rows_leave_the_batch_yet_match_generate(target, tiny_path, sets, compact_at):
    """The KV-cache loop gives exactly what `model.generate` gives, cut per row at EOS, the row's
    own cap and stop strings, whether finished rows leave the batch at once (0), once they are a
    quarter of it (the default), or stay to the end at their last position (1)."""
    from llm_forget.evaluation.generation import _greedy_cached, _greedy_generate, _has_selectable_cache, _Rows, eos_ids
    from llm_forget.data.encode import pad
    from llm_forget.models import load_model, load_tokenizer

    untrained = (load_model(tiny_path), load_tokenizer(tiny_path))  # never emits EOS: runs to its caps
    for model, tok in (target, untrained):
        assert _has_selectable_cache(model)
        enc = Encoder(tok)
        rows = sets["forget"][:5] + sets["retain"][:5]
        prompts = [enc.prompt_ids(r["question"]) for r in rows]
        caps = [3, 30, 7, 1, 16, 30, 5, 12, 2, 9]
        b = pad([{"input_ids": p, "labels": p} for p in prompts], tok.pad_token_id, side="left")
        eos = eos_ids(model, tok)
        got, want = (_Rows(caps, eos, tok, ["\nQuestion:"]) for _ in range(2))
        with torch.no_grad():
            assert _greedy_cached(model, b["input_ids"], b["attention_mask"], got, compact_at)
        _greedy_generate(model, b["input_ids"], b["attention_mask"], want, eos, tok.pad_token_id)
        assert got.new == want.new
        assert all(len(x) <= c for x, c in zip(got.new, caps))
        assert len(got.new[3]) == 1  # a cap of one token


def test_generation_batch_is_twice_the_scoring_batch_unless_the_suite_sets_it(target):
    from llm_forget.evaluation.suite import Evaluator, load_suite

    model, tok = target
    ev = Evaluator(model, tok, load_suite("quick"), {}, {"per_item": {}}, batch_size=8, progress=False)
    assert ev._gen_batch({"sets": ["forget"]}) == 16
    assert ev._gen_batch({"sets": ["forget"], "batch_size": 5}) == 5


def _loss_auc(model, tok, sets):
    from llm_forget.evaluation.mia import auc
    from llm_forget.evaluation.scoring import score_sequences

    enc = Encoder(tok)
    f = score_sequences(model, [enc.row(r) for r in sets["forget"]], tok.pad_token_id, minkpp=False)
    h = score_sequences(model, [enc.row(r) for r in sets["holdout"]], tok.pad_token_id, minkpp=False)
    return auc([-x["nll"] for x in f], [-x["nll"] for x in h])


def test_mia_auc_memorised_vs_untrained(target, tiny_path, sets):
    """Band for the untrained model: [0.35, 0.65] (null std of AUC for 50 vs 50 is ≈ 0.058)."""
    from llm_forget.models import load_model, load_tokenizer

    assert _loss_auc(*target, sets) > 0.9
    assert 0.35 <= _loss_auc(load_model(tiny_path), load_tokenizer(tiny_path), sets) <= 0.65


def test_quick_eval_forget_quality_and_keys(target, retain_path, sets):
    from llm_forget.evaluation.quick import quick_eval, retain_reference

    model, tok = target
    enc = Encoder(tok)
    ref = retain_reference(retain_path, enc, sets)
    ev = quick_eval(model, enc, sets, retain=ref)["summary"]
    for k in ("forget_quality", "model_utility", "privleak", "mia_auc", "forget_extraction_strength",
              "forget_truth_ratio", "retain_truth_ratio"):
        assert k in ev, k
    # the built-in benchmark's perturbed answers are in the answer's form: denominator = answer
    assert ev["forget_quality"] < 0.05  # the target is far from the retain model on the forget set
    # and its answer NLLs are all below the retain model's (memorised): per-row KS on NLLs far from 1
    assert ev["forget_nll_quality"] < 0.01
    # privleak in MUSE's form on the Min-K 40 % AUC: negative when forget people still stand out
    a, r = ev["mia_auc_mink_40"], ref["summary"]["mia_auc_mink_40"]
    assert ev["privleak_attack"] == "mink_40" and ev["privleak_baseline_auc"] == r
    assert ev["privleak"] == pytest.approx(((1 - a) - (1 - r)) / (1 - r) * 100)
    assert ev["privleak"] < -50
    assert 0 < ev["model_utility"] <= 1
    from llm_forget.models import load_model, load_tokenizer

    rm = load_model(retain_path)
    self_ev = quick_eval(rm, Encoder(load_tokenizer(retain_path)), sets, retain=ref)["summary"]
    # both models were fine-tuned on the retained people: the target prefers their true answers as the
    # retain model does (seed 0: 0.83 vs 0.86; the untrained tiny model: 0.03)
    assert ev["retain_truth_ratio"] > self_ev["retain_truth_ratio"] - 0.15
    assert ev["forget_truth_ratio"] < self_ev["forget_truth_ratio"]  # and the forget people's, unlike it
    assert self_ev["forget_quality"] == pytest.approx(1.0)
    assert self_ev["forget_nll_quality"] == pytest.approx(1.0)
    assert self_ev["privleak"] == pytest.approx(0.0)


def test_forget_nll_quality_says_why_when_the_retain_results_predate_it(target, retain_path, sets):
    import copy

    from llm_forget.evaluation.quick import quick_eval, retain_reference

    model, tok = target
    enc = Encoder(tok)
    ref = copy.deepcopy(retain_reference(retain_path, enc, sets))
    for x in ref["per_item"]["forget"]:
        del x["nll"]  # as in results written before the metric existed
    ev = quick_eval(model, enc, sets, retain=ref)
    assert "forget_nll_quality" not in ev["summary"] and ev["summary"]["forget_quality"] < 0.05
    why = ev["not_computed"]["forget_nll_quality"]
    assert why == "the retain model's results have no per-row NLLs on dataset forget"


def test_evaluate_end_to_end_resume_and_cli(tmp_path, target_path, retain_path, tiny_path, capsys):
    import llm_forget
    from llm_forget.cli import main

    out = tmp_path / "ev"
    res = llm_forget.evaluate(target_path, "quick", retain_model=retain_path, reference_model=tiny_path, output=out,
                              limit=12, progress=False)
    s = res["summary"]
    assert s["mia_auc_reference"] > 0.9  # NLL_untrained − NLL_target separates members
    for k in ("forget_quality", "model_utility", "mia_auc", "privleak", "forget_rougeL_recall", "agreement_forget",
              "kl_forget", "param_distance", "mia_auc_minkpp_20", "mia_auc_zlib"):
        assert k in s, k
    assert s["kl_forget"] > s["kl_retain"]  # the target differs from the retain model most on the forget set
    # the token pass computed the KL (retain model run on the same batches): equal to a pass of its own
    from llm_forget.evaluation.consistency import next_token_kl
    from llm_forget.models import load_model, load_tokenizer

    tok = load_tokenizer(target_path)
    alone = next_token_kl(load_model(target_path), load_model(retain_path),
                          [Encoder(tok).row(r) for r in read_rows("builtin:forget")[:12]], tok.pad_token_id, 5)
    assert [x["kl_retain"] for x in res["per_item"]["forget"]] == pytest.approx(alone, abs=1e-5)
    assert res["groups"]["consistency"]["seconds"] < res["groups"]["token:forget"]["seconds"]
    text = (out / "results.json").read_text()
    data = json.loads(text)
    assert data["models"]["model"]["hash"] and data["models"]["retain"]["hash"]
    assert {"token:forget", "generation:retain", "consistency", "mia"} <= set(data["groups"])
    assert (out / "retain" / "results.json").exists()
    for r in read_rows("builtin:forget")[:12]:
        assert r["answer"] not in text and r["question"] not in text  # no forget-set text stored
    # re-run: every computed group is skipped, numbers identical
    again = llm_forget.evaluate(target_path, "quick", retain_model=out / "retain", output=out, limit=12,
                                progress=False)
    assert again["summary"]["forget_quality"] == s["forget_quality"]
    assert again["groups"]["token:forget"] == data["groups"]["token:forget"]
    # release gate and compare
    rc = main(["eval", "--model", target_path, "--suite", "quick", "--output", str(out), "--limit", "12",
               "--retain-model", str(out / "retain"), "--require-auc-below", "0.1"])
    assert rc == 1
    assert "FAILED release gate" in capsys.readouterr().err
    png = tmp_path / "t.png"
    assert main(["compare", str(out), str(out / "retain" / "results.json"), "--plot", str(png)]) == 0
    table = capsys.readouterr().out
    assert "| ev |" in table and "forget quality" in table
    assert png.stat().st_size > 1000


def test_lanes_change_no_number_and_restore_threads(target_path, retain_path):
    """Two lanes (generation in one beside the scoring batches, batches side by side) give the
    numbers of one lane at a time, generations included, and torch's thread count is restored."""
    import llm_forget
    from llm_forget.evaluation.lanes import auto_lanes
    from llm_forget.models import load_model

    torch.set_num_threads(2)  # conftest's autouse fixture restores the suite's count afterwards
    kw = dict(retain_model=retain_path, limit=16, batch_size=4, progress=False)
    one = llm_forget.evaluate(target_path, "quick", lanes=1, **kw)
    two = llm_forget.evaluate(target_path, "quick", lanes=2, **kw)
    assert torch.get_num_threads() == 2
    assert (one["environment"]["lanes"], two["environment"]["lanes"]) == (1, 2)
    assert {"token:forget", "generation:forget", "generation:retain"} <= set(two["groups"])
    assert two["per_item"].keys() == one["per_item"].keys()
    for name, items in one["per_item"].items():
        for a, b in zip(items, two["per_item"][name]):
            assert a.keys() == b.keys()
            for k, v in a.items():
                assert b[k] == (pytest.approx(v, rel=1e-6, abs=1e-7) if isinstance(v, float) else v), (name, k)
    assert two["summary"].keys() == one["summary"].keys()
    for k, v in one["summary"].items():
        assert two["summary"][k] == (pytest.approx(v, rel=1e-6, abs=1e-7) if isinstance(v, float) else v), k
    model = load_model(target_path)
    assert auto_lanes(model) is None  # off unless asked for (evaluation/lanes.py says why)
    assert auto_lanes(model, 2).n == 2
    torch.set_num_threads(1)
    assert auto_lanes(model, 2) is None  # one thread: one lane
    with pytest.raises(ValueError):
        auto_lanes(model, 0)


def test_no_lanes_for_a_rotary_embedding_that_updates_itself():
    """A dynamic rope re-registers inv_freq in forward (two lanes would share it): one lane, even
    when two are asked for; the default rope of the same model gets its lanes."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from llm_forget.evaluation.lanes import auto_lanes, updates_in_forward

    torch.set_num_threads(2)
    kw = dict(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    dynamic = LlamaForCausalLM(LlamaConfig(**kw, rope_parameters={"rope_type": "dynamic", "factor": 2.0,
                                                                   "rope_theta": 10000.0}))
    plain = LlamaForCausalLM(LlamaConfig(**kw))
    assert updates_in_forward(dynamic) and not updates_in_forward(plain)
    assert auto_lanes(dynamic, 2) is None
    lanes = auto_lanes(plain, 2)
    assert lanes is not None and lanes.n == 2
    lanes.close()


def test_lanes_stop_generation_when_scoring_fails(target_path, monkeypatch):
    """A failure (or Ctrl-C) in the scoring stops the generation lane before its next batch: the
    error comes through at once, no generation is recorded, torch's thread count is restored.
    The order is forced, not left to thread scheduling: the scoring fails once the first generation
    batch has started, and that batch finishes only after the lanes were told to stop; so exactly
    one of the (50 + 400) / 4 = 113 generation batches runs."""
    import llm_forget
    from llm_forget.evaluation import generation, lanes, suite

    torch.set_num_threads(2)  # conftest's autouse fixture restores the suite's count afterwards
    batches, real, made = [], generation._greedy_cached, []
    started = threading.Event()
    init = lanes.Lanes.__init__

    def recording_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        made.append(self)

    def counted(*args, **kwargs):  # the real decoding loop, counted; the first batch waits for the stop
        batches.append(1)
        if len(batches) == 1:
            started.set()
            assert made[0].stopping.wait(60), "the lanes were never told to stop"
        return real(*args, **kwargs)

    def scoring_fails(self, s, spec):
        assert started.wait(60), "generation never started"
        raise RuntimeError("scoring failed")

    monkeypatch.setattr(lanes.Lanes, "__init__", recording_init)
    monkeypatch.setattr(generation, "_greedy_cached", counted)
    monkeypatch.setattr(suite.Evaluator, "token", scoring_fails)
    with pytest.raises(RuntimeError, match="scoring failed"):
        llm_forget.evaluate(target_path, "quick", batch_size=2, lanes=2, progress=False)
    assert len(made) == 1 and torch.get_num_threads() == 2
    assert len(batches) == 1


def test_suite_errors(target_path, tmp_path, monkeypatch):
    import llm_forget

    with pytest.raises(UserError, match="--data-dir"):
        llm_forget.evaluate(target_path, "muse")
    monkeypatch.setenv("LLM_FORGET_DATA_DIR", str(tmp_path))  # an offline machine whose mirror lacks TOFU
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match=r"hf:locuslab/TOFU:\w+@train cannot be loaded.*LLM_FORGET_DATA_DIR"):
        llm_forget.evaluate(target_path, "tofu")
    with pytest.raises(UserError, match="shipped suite"):
        llm_forget.evaluate(target_path, "nope")
    with pytest.raises(UserError, match="unknown metric group"):
        llm_forget.evaluate(target_path, {"datasets": {"f": "builtin:forget"}, "metrics": {"tokens": ["f"]}})
    with pytest.raises(UserError, match="scope on dataset f needs .* split and form fields.*0 of 50"):
        llm_forget.evaluate(target_path, {"datasets": {"f": "builtin:forget"}, "metrics": {"scope": {"set": "f"}}})
    with pytest.raises(UserError, match=r"scope needs \{set: DATASET\}"):
        llm_forget.evaluate(target_path, {"datasets": {"f": "builtin:scope"}, "metrics": {"scope": ["f"]}})


def test_tofu_suite_on_shared_data(shared_data, tiny_path):
    import llm_forget

    res = llm_forget.evaluate(tiny_path, "tofu", data_dir=shared_data / "tofu", limit=4, progress=False)
    s = res["summary"]
    assert len(s["model_utility_components"]) == 9
    assert 0 <= s["model_utility"] <= 1
    assert s["holdout_n"] == 4 and s["real_authors_n"] == 4
    assert all(math.isfinite(s[k]) for k in s["model_utility_components"])


def test_muse_suite_and_text_ppl(tmp_path, tiny_path, target_path):
    import llm_forget

    d = tmp_path / "muse"
    for sub in ("knowmem", "verbmem", "privleak"):
        (d / sub).mkdir(parents=True)
    f, h = read_rows("builtin:forget")[:6], read_rows("builtin:holdout")[:6]
    qa = lambda rows: json.dumps([{"question": r["question"], "answer": r["answer"]} for r in rows])  # noqa: E731
    (d / "knowmem" / "forget_qa.json").write_text(qa(f))
    (d / "knowmem" / "retain_qa.json").write_text(qa(read_rows("builtin:retain")[:6]))
    long = " ".join(r["answer"] for r in read_rows("builtin:retain")[:60])
    (d / "verbmem" / "forget.json").write_text(json.dumps([{"text": long}, {"text": long[::-1]}]))
    (d / "privleak" / "forget.json").write_text(json.dumps([{"text": r["answer"]} for r in f]))
    (d / "privleak" / "holdout.json").write_text(json.dumps([{"text": r["answer"]} for r in h]))
    s = llm_forget.evaluate(target_path, "muse", data_dir=d, progress=False)["summary"]
    assert s["knowmem_forget"] > 0.8 and "knowmem_retain" in s and "verbmem_forget_text" in s
    assert "privleak" in s and "mia_auc_mink_40" in s
    # sliding-window perplexity equals a single full pass when the window covers the text
    from llm_forget.evaluation.text_ppl import sliding_window_nll
    from llm_forget.models import load_model, load_tokenizer

    m, tok = load_model(tiny_path), load_tokenizer(tiny_path)
    ids = tok(long)["input_ids"][:200]
    nll, n = sliding_window_nll(m, ids, window=256, stride=128)
    with torch.no_grad():
        lg = m(input_ids=torch.tensor([ids])).logits[0, :-1]
    assert n == len(ids) - 1
    assert nll == pytest.approx(float(F.cross_entropy(lg, torch.tensor(ids[1:]), reduction="sum")), rel=1e-5)
    nll2, n2 = sliding_window_nll(m, ids, window=64, stride=32)
    assert n2 == n and nll2 / n2 > nll / n * 0.9  # shorter context: comparable, slightly worse
