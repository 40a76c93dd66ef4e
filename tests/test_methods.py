"""Each objective's pure loss against values computed by hand; gradient ascent and gradient
difference through the real trainer's concatenated batch against a per-row computation."""

import math

import pytest
import torch

from llm_forget.methods.base import masked_kl, nll, sequence_logp, token_logps
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

    assert set(METHODS) == {"gradient_ascent", "grad_diff", "kl", "npo", "simnpo", "idk_po", "rmu", "swap_distill",
                            "row_target"}
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


def test_trainer_loss_on_concatenated_batch_equals_per_row_loss_by_hand(target_path, tmp_path):
    """The trainer pads forget and retain rows to one length and runs them in ONE forward pass.
    On the real tiny-target model, the loss it computes for a batch from its own dataloader must
    equal the loss assembled by hand from each row run ALONE (no padding, no concatenation), with
    only answer tokens counted: -γ·NLL(forget) + α·NLL(retain), each a token mean over its part."""
    from transformers import TrainingArguments

    from llm_forget.data.encode import Encoder
    from llm_forget.data.readers import read_rows
    from llm_forget.methods.grad_diff import GradDiff
    from llm_forget.methods.gradient_ascent import GradientAscent
    from llm_forget.models import load_model, load_tokenizer
    from llm_forget.trainer import Collator, Reference, UnlearnDataset, UnlearnTrainer

    tok = load_tokenizer(target_path)
    model = load_model(target_path, "float32").eval()
    enc = Encoder(tok, "Question: {question}\nAnswer:", False, 256, "truncate")
    forget = [enc.row(r) for r in read_rows("builtin:forget")[:6]]
    retain = [enc.row(r) for r in read_rows("builtin:retain")[:9]]
    ds = UnlearnDataset(forget, retain, seed=3)
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", remove_unused_columns=False,
                             per_device_train_batch_size=4, seed=0)

    def row_logps(item):  # log p of each answer token, the row alone through the model, in float64
        ids = torch.tensor([item["input_ids"]])
        with torch.no_grad():
            lp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
        return [float(lp[t - 1, y]) for t, y in enumerate(item["labels"]) if y != -100 and t > 0]

    def part_nll(items):
        lps = [x for it in items for x in row_logps(it)]
        assert 0 < len(lps) < sum(len(it["input_ids"]) for it in items)  # prompts are left out
        return -sum(lps) / len(lps)

    for method in (GradDiff(gamma=0.7, alpha=1.3), GradientAscent()):
        trainer = UnlearnTrainer(model=model, args=args, train_dataset=ds, data_collator=Collator(tok.pad_token_id),
                                 method=method, reference=Reference("none"))
        batch = next(iter(trainer.get_train_dataloader()))
        idx = batch["index"].tolist()
        f_items, r_items = [ds[i]["forget"] for i in idx], [ds[i]["retain"] for i in idx]
        mask = torch.cat([batch["forget"]["attention_mask"], batch["retain"]["attention_mask"]])
        assert batch["forget"]["input_ids"].shape == batch["retain"]["input_ids"].shape  # one common length
        assert (mask == 0).any()  # some rows are padded
        with torch.no_grad():
            got = float(trainer.compute_loss(model, batch))
        f = part_nll(f_items)
        want = -0.7 * f + 1.3 * part_nll(r_items) if isinstance(method, GradDiff) else -f
        assert got == pytest.approx(want, abs=2e-5), type(method).__name__
