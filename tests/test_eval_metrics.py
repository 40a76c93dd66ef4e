"""Unit tests of every evaluation formula on hand-computed values."""

import math
import zlib

import pytest
import torch

from llm_forget.evaluation import consistency, generation, mia, scoring, text_ppl, tofu


def test_extraction_strength():
    t, f = True, False
    assert scoring.extraction_strength(torch.tensor([t, f, t, t])) == pytest.approx(1 - 2 / 4)
    assert scoring.extraction_strength(torch.tensor([t, t, t])) == 1.0
    assert scoring.extraction_strength(torch.tensor([t, t, f])) == 0.0  # nothing extracted: 0, not 1/|y|


def test_min_k():
    lp = torch.tensor([-1.0, -2.0, -3.0, -4.0, -5.0])
    assert scoring.min_k(lp, 40) == pytest.approx(-4.5)  # floor(0.4*5)=2 lowest: -5, -4
    assert scoring.min_k(lp, 20) == pytest.approx(-5.0)
    assert scoring.min_k(lp, 100) == pytest.approx(-3.0)
    # floor, as the Min-K% code and open-unlearning: 0.4*4 = 1.6 -> 1 token (ceil would take 2)
    assert scoring.min_k(lp[:4], 40) == pytest.approx(-4.0)
    assert scoring.min_k(lp[:2], 20) == pytest.approx(-2.0)  # at least one token


def test_vocab_moments_hand_and_chunked():
    logits = torch.tensor([[0.0, math.log(3.0)]])  # p = (1/4, 3/4)
    mu, sd = scoring.vocab_moments(logits)
    m1 = 0.25 * math.log(0.25) + 0.75 * math.log(0.75)
    m2 = 0.25 * math.log(0.25) ** 2 + 0.75 * math.log(0.75) ** 2
    assert float(mu) == pytest.approx(m1, abs=1e-6)
    assert float(sd) == pytest.approx(math.sqrt(m2 - m1 * m1), abs=1e-6)
    big = torch.randn(5, 37)
    a, b = scoring.vocab_moments(big, chunk=4), scoring.vocab_moments(big)
    assert torch.allclose(a[0], b[0], atol=1e-6) and torch.allclose(a[1], b[1], atol=1e-6)


def test_vocab_moments_flat_distribution_matches_float64():
    """A nearly flat distribution over 2,048 tokens: μ = −log 2048 ≈ −7.6 and σ ≈ 1e-3. Summing
    Σ p (log p)² − μ² in float32 cancels to noise of ~1e-7 · μ² ≈ 6e-6 against σ² ≈ 1e-6 (σ came out
    several times too large or clamped to 1e-6); summed around μ, σ is within 1 % of float64's."""
    g = torch.Generator().manual_seed(0)
    logits = 1e-3 * torch.randn(6, 2048, generator=g)
    lp = torch.log_softmax(logits.double(), -1)
    mu64 = (lp.exp() * lp).sum(-1)
    sd64 = (lp.exp() * (lp - mu64[:, None]) ** 2).sum(-1).sqrt()
    mu, sd = scoring.vocab_moments(logits)
    assert torch.allclose(mu.double(), mu64, rtol=1e-6, atol=0)
    assert torch.allclose(sd.double(), sd64, rtol=1e-2, atol=0), (sd, sd64)
    a = scoring.vocab_moments(logits, chunk=100)[1]  # chunked alike
    assert torch.allclose(a.double(), sd64, rtol=1e-2, atol=0)


def test_row_metrics_hand():
    # two answer positions, vocab 2: p(target) = 1/2 then 3/4
    lg = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    y = torch.tensor([1, 0])
    r = scoring.row_metrics(lg, y, ks=(50,), minkpp=True)
    assert r["nll"] == pytest.approx(-(math.log(0.5) + math.log(0.75)) / 2, abs=1e-6)
    assert r["nll_sum"] == pytest.approx(-(math.log(0.5) + math.log(0.75)), abs=1e-6)
    assert r["n_tokens"] == 2
    assert r["exact_memorization"] == 0.5  # argmax of [0,0] is 0 != 1; second correct
    assert r["extraction_strength"] == 0.5
    assert r["mink_50"] == pytest.approx(math.log(0.5), abs=1e-6)
    # Min-K%++: position 0 has p uniform, so log p(y) = mu and sigma = 0 (clamped to 1e-6): z = 0 up to
    # float32 rounding of log p - mu (~1e-7 / 1e-6); position 1 (p = 3/4 on y) has z = sqrt(1/3); the lower is 0
    assert r["minkpp_50"] == pytest.approx(0.0, abs=0.2)


def test_minkpp_by_hand():
    """p = (1/2, 1/4, 1/4) at both positions: mu = -1.5 ln 2, sigma = 0.5 ln 2 (E[(log p)^2] = 2.5 ln^2 2).
    Target 0 (log p = -ln 2): z = +1; target 1 (log p = -2 ln 2): z = -1. Min-50%++ keeps the lower
    half (ceil(0.5 * 2) = 1 value): -1; Min-100%++ is the mean: 0."""
    lg = torch.tensor([[math.log(2.0), 0.0, 0.0], [math.log(2.0), 0.0, 0.0]])
    r = scoring.row_metrics(lg, torch.tensor([0, 1]), ks=(50, 100), minkpp=True)
    assert r["minkpp_50"] == pytest.approx(-1.0, abs=1e-5)
    assert r["minkpp_100"] == pytest.approx(0.0, abs=1e-5)
    assert r["mink_50"] == pytest.approx(-2 * math.log(2.0), abs=1e-6)
    # shifting every logit of a position changes nothing (softmax is shift-invariant)
    r2 = scoring.row_metrics(lg + torch.tensor([[5.0], [-3.0]]), torch.tensor([0, 1]), ks=(50, 100))
    assert r2["minkpp_50"] == pytest.approx(-1.0, abs=1e-5)


def test_token_metrics_ignore_prompt_and_padding():
    """Garbage logits at prompt / padding positions must not change any number."""
    torch.manual_seed(0)
    logits = torch.randn(1, 6, 11)
    labels = torch.tensor([[-100, -100, 3, 4, 5, -100]])  # prompt x2, answer x3, pad x1
    a = scoring.token_metrics(logits, labels)[0]
    logits2 = logits.clone()
    logits2[0, 0] += 100 * torch.randn(11)  # predicts a prompt token
    logits2[0, 4:] = 1e4  # position 4 predicts label 5 (kept), so restore it; position 5 predicts nothing
    logits2[0, 4] = logits[0, 4]
    b = scoring.token_metrics(logits2, labels)[0]
    assert a == b
    # hand NLL from the answer positions only (logits at t predict labels at t+1)
    lp = torch.log_softmax(logits[0], -1)
    want = -(lp[1, 3] + lp[2, 4] + lp[3, 5]) / 3
    assert a["nll"] == pytest.approx(float(want), abs=1e-6)
    assert a["n_tokens"] == 3


def test_mia_scores_and_auc():
    assert mia.zlib_score(2.0, "aaaa") == pytest.approx(-2.0 / len(zlib.compress(b"aaaa")))
    assert mia.reference_score(nll_model=1.0, nll_reference=3.0) == 2.0
    s = mia.attack_scores({"nll": 1.5, "zlib": -0.1, "mink_20": -3.0, "nll_reference": 2.0})
    assert s == {"loss": -1.5, "zlib": -0.1, "mink_20": -3.0, "reference": 0.5}
    # pairs (3>1) (3>2) (2>1) (2=2 -> 1/2): 3.5 / 4
    assert mia.auc([3, 2], [1, 2]) == pytest.approx(0.875)
    assert mia.auc([1, 1], [1, 1]) == 0.5


def test_privleak_in_muse_form():
    """((1 − A) − (1 − R)) / (1 − R) × 100, A and R oriented "higher = members exposed"."""
    assert mia.privleak(0.75, 0.5) == pytest.approx(-50.0)  # (0.25 − 0.5) / 0.5: under-unlearned, negative
    assert mia.privleak(0.5) == 0.0
    assert mia.privleak(0.3, 0.6) == pytest.approx(75.0)  # (0.7 − 0.4) / 0.4: over-unlearned, positive
    assert mia.privleak(0.6, 0.6) == 0.0  # as private as the retain model
    # the case (A, R) = (0.985, 0.196) of a memorising model against its retain model: near −100,
    # as MUSE's target −99.8, where (A − R) / R would give +402.6
    assert mia.privleak(0.985, 0.196) == pytest.approx((0.015 - 0.804) / 0.804 * 100)
    assert mia.privleak(0.985, 0.196) == pytest.approx(-98.134, abs=1e-3)
    assert mia.privleak(0.9, 1.0) is None  # 1 − R = 0: undefined, written as null


def test_eos_left_out_of_memorization_and_min_k_not_of_nll():
    """open-unlearning's convention: the closing eos counts in nll (probability, LOSS) but not in
    exact memorization, extraction strength, Min-K% and Min-K%++."""
    eos = 2
    # three answer positions, vocab 3; targets 1, 0, eos; argmax right, right, wrong
    lg = torch.tensor([[0.0, math.log(3.0), 0.0], [math.log(4.0), 0.0, 0.0], [0.0, math.log(2.0), 0.0]])
    y = torch.tensor([1, 0, eos])
    p = [3 / 5, 4 / 6, 1 / 4]  # p(target) at each position
    with_eos = scoring.row_metrics(lg, y, ks=(40, 100), minkpp=False)
    no_eos = scoring.row_metrics(lg, y, ks=(40, 100), minkpp=False, eos_id=eos)
    for r in (with_eos, no_eos):
        assert r["nll"] == pytest.approx(-sum(map(math.log, p)) / 3, abs=1e-6) and r["n_tokens"] == 3
    assert with_eos["exact_memorization"] == pytest.approx(2 / 3) and with_eos["extraction_strength"] == 0.0
    assert no_eos["exact_memorization"] == 1.0 and no_eos["extraction_strength"] == 1.0
    assert with_eos["mink_40"] == pytest.approx(math.log(1 / 4), abs=1e-6)  # floor(1.2) = 1 lowest: the eos
    assert no_eos["mink_40"] == pytest.approx(math.log(3 / 5), abs=1e-6)  # max(1, floor(0.8)) = 1 of 3/5, 4/6
    assert no_eos["mink_100"] == pytest.approx((math.log(3 / 5) + math.log(4 / 6)) / 2, abs=1e-6)
    # a row that is only an eos keeps it; a last token other than eos is kept
    one = scoring.row_metrics(lg[2:], y[2:], ks=(40,), minkpp=False, eos_id=eos)
    assert one["exact_memorization"] == 0.0
    assert scoring.row_metrics(lg, y, ks=(40,), minkpp=False, eos_id=7) == scoring.row_metrics(lg, y, ks=(40,),
                                                                                                minkpp=False)


def test_truth_ratio_and_aggregations():
    assert tofu.truth_ratio(1.0, [2.0, 3.0]) == pytest.approx(math.exp(1.0 - 2.5))
    # geometric mean of perturbed probabilities, divided by p(correct)
    pc, pp = math.exp(-1.0), [math.exp(-2.0), math.exp(-3.0)]
    assert tofu.truth_ratio(1.0, [2.0, 3.0]) == pytest.approx(math.sqrt(pp[0] * pp[1]) / pc)
    assert tofu.forget_truth_ratio([0.5, 2.0, 1.0]) == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert tofu.retain_truth_ratio([0.25, 2.0]) == pytest.approx((0.75 + 0.0) / 2)
    assert tofu.normalised_probability(math.log(2), [math.log(4), math.log(4)]) == pytest.approx(0.5)


def test_forget_quality_ks():
    assert tofu.forget_quality([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    # n = m = 3, D = 1: exact two-sided p = 2 / C(6, 3) = 0.1
    assert tofu.forget_quality([1, 2, 3], [10, 11, 12]) == pytest.approx(0.1)


def test_nll_spread_quality_ks():
    from llm_forget.evaluation.nll_spread import nll_spread_quality

    assert nll_spread_quality([0.1, 1.5, 3.0], [0.1, 1.5, 3.0]) == pytest.approx(1.0)
    # every row pushed past retraining's: D = 1, n = m = 3, exact two-sided p = 2 / C(6, 3) = 0.1
    assert nll_spread_quality([4.0, 5.0, 6.0], [0.5, 1.5, 3.0]) == pytest.approx(0.1)


def test_harmonic_mean():
    assert tofu.harmonic_mean([1.0, 0.5]) == pytest.approx(2 / 3)
    assert tofu.harmonic_mean([0.2] * 9) == pytest.approx(0.2)
    assert tofu.harmonic_mean([0.9, 0.0, 0.5]) == 0.0


def test_rouge_l():
    recall, f1 = generation.rouge_l("the cat", "the cat sat")  # LCS 2: R = 2/3, P = 1
    assert recall == pytest.approx(2 / 3)
    assert f1 == pytest.approx(0.8)
    assert generation.rouge_l("dogs running", "dog runs")[0] == pytest.approx(1.0)  # stemming
    assert generation.rouge_l("", "a b")[0] == 0.0


def test_rouge_l_equals_rouge_score_default_scorer():
    """The memoised-stem scorer gives rouge-score's own numbers (its default tokenizer, stemming)."""
    from rouge_score import rouge_scorer

    ref = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    texts = ["The author's parents were a dedicated nurse and a renowned architect.",
             "Her father worked as a nurse; her mother designed buildings!", "Running runners ran 3 runs",
             "", "connected connections connecting connects", "The author's parents were nurses."]
    for a in texts:
        for b in texts:
            want = ref.score(b, a)["rougeL"]
            assert generation.rouge_l(a, b) == (want.recall, want.fmeasure)


def test_generation_stops_at_the_token_completing_a_stop_string(tiny_path):
    """A row is done at the token that completes a stop string, whether the tail is decoded only
    when a token bears the stop string's (ASCII) last character or, for a non-ASCII ending, at
    every token; the text is then cut before it."""
    from llm_forget.models import load_tokenizer

    tok = load_tokenizer(tiny_path)
    ids = tok("Paris is big.\nQuestion: what next? More text", add_special_tokens=False)["input_ids"]
    for stops in (["\nQuestion:"], ["\nQuestion:", "nexté"]):
        rows = generation._Rows([len(ids)], [], tok, stops)
        assert (rows.ends is None) == (len(stops) == 2)
        done = [rows.push([0], [t])[0] for t in ids]
        k = done.index(True)
        assert "\nQuestion:" in tok.decode(ids[:k + 1]) and "\nQuestion:" not in tok.decode(ids[:k])
        assert generation.cut_at_stop(tok.decode(rows.new[0]), stops) == "Paris is big."


def test_cut_at_stop():
    assert generation.cut_at_stop("Paris.\nQuestion: next", ["\nQuestion:"]) == "Paris."
    assert generation.cut_at_stop("abc", []) == "abc"


def test_kl_agreement_param_distance():
    lp = torch.log(torch.tensor([[0.5, 0.5]]))
    lq = torch.log(torch.tensor([[0.25, 0.75]]))
    want = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert float(consistency.kl_rows(lp, lq)[0]) == pytest.approx(want, abs=1e-6)
    assert float(consistency.kl_rows(lp, lp)[0]) == pytest.approx(0.0, abs=1e-7)
    assert consistency.agreement(["a", "b", "c", "d"], ["a", "x", "c", "y"]) == 0.5
    a, b = torch.nn.Linear(2, 1, bias=False), torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        a.weight.copy_(torch.tensor([[1.0, 2.0]]))
        b.weight.copy_(torch.tensor([[4.0, 6.0]]))
    assert consistency.param_distance(a, b) == pytest.approx(5.0)  # sqrt(3² + 4²)
    assert consistency.param_distance(a, torch.nn.Linear(3, 1, bias=False)) is None


def test_window_spans_and_perplexity():
    assert text_ppl.window_spans(10, 4, 2) == [(0, 4, 1), (2, 6, 4), (4, 8, 6), (6, 10, 8)]
    assert text_ppl.window_spans(5, 8, 4) == [(0, 5, 1)]
    scored = sum(e - f for _, e, f in text_ppl.window_spans(1000, 64, 48))
    assert scored == 999  # every token but the first is scored exactly once
    assert text_ppl.perplexity(2 * math.log(3), 2) == pytest.approx(3.0)


def test_right_padded():
    assert scoring.right_padded(torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0]]))
    assert not scoring.right_padded(torch.tensor([[1, 1, 1], [0, 1, 1]]))  # left padding
    assert not scoring.right_padded(torch.tensor([[1, 0, 1]]))  # a hole
