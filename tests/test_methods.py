"""Each objective's pure loss against values computed by hand."""

import math

import pytest
import torch

from llm_forget.methods.base import masked_kl, nll, sequence_logp, token_logps
from llm_forget.methods.grad_diff import grad_diff_loss
from llm_forget.methods.gradient_ascent import gradient_ascent_loss
from llm_forget.methods.npo import npo_loss
from llm_forget.methods.rmu import rmu_loss
from llm_forget.methods.simnpo import simnpo_loss


def _batch():
    # vocab 2; position t's logits predict token t+1. Row 0: prompt token, then answer [1, 0].
    logits = torch.tensor([[[0.0, 0.0], [math.log(3), 0.0], [9.0, 9.0]]])
    labels = torch.tensor([[-100, 1, 0]])
    return logits, labels


def test_token_logps_mask_prompt_and_shift():
    logits, labels = _batch()
    logp, mask = token_logps(logits, labels)
    # position 0 predicts label 1 under uniform: log 0.5; position 1 predicts 0 under [3:1] odds: log 0.75
    assert mask.tolist() == [[True, True]]
    assert logp[0, 0].item() == pytest.approx(math.log(0.5), abs=1e-6)
    assert logp[0, 1].item() == pytest.approx(math.log(0.75), abs=1e-6)
    s, n = sequence_logp(logits, labels)
    assert s.item() == pytest.approx(math.log(0.5) + math.log(0.75), abs=1e-6) and n.item() == 2


def test_nll_ignores_padding_and_prompt():
    logits, labels = _batch()
    assert nll(logits, labels).item() == pytest.approx(-(math.log(0.5) + math.log(0.75)) / 2, abs=1e-6)
    padded = torch.tensor([[-100, -100, 0]])  # only the last position counts
    assert nll(logits, padded).item() == pytest.approx(-math.log(0.75), abs=1e-6)


def test_masked_kl_by_hand():
    ref = torch.zeros(1, 2, 2)  # uniform reference
    logits = torch.tensor([[[math.log(3), 0.0], [5.0, -5.0]]])
    labels = torch.tensor([[-100, 0]])  # only position 0 (predicting label 0) is an answer position
    expected = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)  # 0.143841
    assert masked_kl(ref, logits, labels).item() == pytest.approx(expected, abs=1e-6)
    assert masked_kl(logits, logits, labels).item() == pytest.approx(0.0, abs=1e-7)


def test_gradient_ascent_and_grad_diff():
    assert gradient_ascent_loss(torch.tensor(2.0)).item() == -2.0
    assert grad_diff_loss(torch.tensor(2.0), torch.tensor(1.0), gamma=1.0, alpha=0.5).item() == -1.5


def test_npo_by_hand_and_limit():
    # -(2/0.1) log σ(-0.1 (-2 - -1)) = -20 log σ(0.1)
    expected = -20 * math.log(1 / (1 + math.exp(-0.1)))
    assert npo_loss(torch.tensor([-2.0]), torch.tensor([-1.0]), 0.1).item() == pytest.approx(expected, rel=1e-6)
    # as β -> 0 the gradient w.r.t. log π_θ tends to gradient ascent's (d/dlogp of logp = 1)
    logp = torch.tensor([-3.0], requires_grad=True)
    npo_loss(logp, torch.tensor([-3.0]), 1e-4).backward()
    assert logp.grad.item() == pytest.approx(1.0, abs=1e-3)
    # bounded below by 0
    assert npo_loss(torch.tensor([-1000.0]), torch.tensor([0.0]), 0.1).item() >= 0


def test_simnpo_by_hand():
    # NLL_sum = 6 over 3 tokens: mean 2; -(2/4.5) log σ(4.5 · (2 - 0.5))
    expected = -(2 / 4.5) * math.log(1 / (1 + math.exp(-4.5 * 1.5)))
    got = simnpo_loss(torch.tensor([-6.0]), torch.tensor([3]), beta=4.5, delta=0.5)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_rmu_by_hand():
    hf = torch.tensor([[[1.0, 2.0], [7.0, 7.0]]])
    fmask = torch.tensor([[True, False]])  # second position ignored
    hr, hr0 = torch.tensor([[[1.0, 1.0]]]), torch.zeros(1, 1, 2)
    loss, lf, lr = rmu_loss(hf, fmask, torch.zeros(2), hr, hr0, torch.tensor([[True]]), alpha=2.0)
    assert lf.item() == pytest.approx(2.5) and lr.item() == pytest.approx(1.0) and loss.item() == pytest.approx(4.5)


def test_registry_and_config_defaults():
    from llm_forget.config import method_from_config, parse_config
    from llm_forget.methods import METHODS

    assert set(METHODS) == {"gradient_ascent", "grad_diff", "kl", "npo", "simnpo", "idk_po", "rmu"}
    m = method_from_config(parse_config(None, {"method": "simnpo", "output_dir": "x"}))
    assert (m.beta, m.delta, m.gamma, m.alpha) == (4.5, 0.0, 0.125, 1.0)
    m = method_from_config(parse_config(None, {"method": "npo", "beta": "0.3", "output_dir": "x"}))
    assert m.beta == 0.3 and m.reference_needs() == {"forget_logps"}


def test_choose_reference():
    from llm_forget.api import choose_reference
    from llm_forget.errors import UserError

    assert choose_reference("auto", set(), False) == "none"
    assert choose_reference("auto", {"forget_logps"}, False) == "cached"
    assert choose_reference("auto", {"retain_logits"}, True) == "adapter"
    assert choose_reference("auto", {"hidden"}, False) == "copy"
    with pytest.raises(UserError):
        choose_reference("cached", {"retain_logits"}, False)
