"""row_target: the per-row loss, the anchor and the target assignment by hand, the gradient of a memorised row,
the alternatives found in the retain rows, and a short real run that moves each forget row towards its target."""

import math

import pytest
import torch

from llm_forget.data.benchmark import split
from llm_forget.methods.row_target import (RowTarget, alternative_answers, anchor_loss, assign_targets,
                                           row_target_loss)
from llm_forget.methods.swap_distill import find_subjects


def test_row_target_and_anchor_losses_by_hand():
    ell, tau = torch.tensor([0.5, 4.0]), torch.tensor([2.0, 2.0])
    assert row_target_loss(ell, tau).item() == pytest.approx((math.log(4) + math.log(2)) / 2, rel=1e-6)  # two-sided
    assert row_target_loss(torch.tensor([0.0]), torch.tensor([1.0]), floor=1e-3).item() == \
        pytest.approx(-math.log(1e-3), rel=1e-6)  # a row at NLL 0 counts at the floor, not as infinity
    assert anchor_loss(torch.tensor([1.0, 3.0]), torch.tensor([2.0, 2.0])).item() == pytest.approx(0.5)


def test_targets_are_the_reference_quantiles_in_the_predictors_order():
    # ranks of the predictor (1, 0, 3, 2); quantiles (r + 1/2)/4 of [1, 2, 3, 4] by linear interpolation: 1 + 3q
    got = assign_targets([4.0, 2.0, 1.0, 3.0], [0.3, 0.1, 0.9, 0.5])
    assert got == pytest.approx([1 + 3 * 0.375, 1 + 3 * 0.125, 1 + 3 * 0.875, 1 + 3 * 0.625])
    assert assign_targets([1.0, 2.0], [5.0, 5.0]) == pytest.approx([1.25, 1.75])  # ties by position


def test_a_memorised_row_keeps_its_gradient():
    """Gradient ascent's gradient on a row the model gives p = 0.999 is 1 − p = 0.001 per logit; the log-gap's is
    (1 − p) / ℓ ≈ 1, as large as an unsure row's: memorised rows are not left behind."""
    z = torch.tensor([math.log(999.0), 0.0], requires_grad=True)  # p(answer token 0) = 0.999
    ell = -torch.log_softmax(z, 0)[0]
    row_target_loss(ell[None], torch.tensor([2.0])).backward()
    p = 0.999
    assert z.grad[0].item() == pytest.approx((1 - p) / -math.log(p), rel=1e-4)
    assert abs(z.grad[0].item()) > 0.99


def test_alternatives_are_other_peoples_answers_to_the_same_question():
    forget, retain = split("forget")[:10], split("retain")
    alt = alternative_answers(forget, find_subjects(forget), retain, limit=1000)
    for row, answers in zip(forget, alt):
        same = {r["answer"] for r in retain if r["question"] == row["question"].replace(row["person"], r["person"])}
        assert answers and set(answers) == same - {row["answer"]}, row["question"]
    assert alternative_answers(forget[:1], [None], retain, 32) == [[]]  # no subject, no alternatives
    capped = alternative_answers(forget, find_subjects(forget), retain, limit=2)
    assert capped == [a[:2] for a in alt]  # the first `limit` in sorted order


def test_short_run_moves_each_forget_row_towards_its_own_target(target_path, tmp_path):
    """Targets from the starting model (as the run computes them without a holdout: swapped forget answers); after
    a short run the mean log-gap |log ℓ_i − log τ_i| over the forget rows is less than half the target's, and the
    gap falls from 3.7-3.8 to 0.34-0.37 on the zoo builds of seeds 0 and 1."""
    import llm_forget
    from llm_forget.data.encode import Encoder
    from llm_forget.models import load_model, load_tokenizer
    from llm_forget.recipes_index import shipped
    from llm_forget.selection import length_batches, row_nlls, swapped_rows

    forget, retain = split("forget"), split("retain")
    tok = load_tokenizer(target_path)
    enc = Encoder(tok)
    m = RowTarget()
    m.prepare_targets(load_model(target_path), enc, forget, swapped_rows(forget, 0), retain, tok.pad_token_id)
    assert sum(bool(a) for a in m.alternatives) == len(forget)

    def gap(path):
        nll = [s / k for s, k in row_nlls(load_model(path), length_batches(enc.rows(forget), tok.pad_token_id, 16))]
        return sum(abs(math.log(a) - math.log(t)) for a, t in zip(nll, m.targets)) / len(forget)

    res = llm_forget.unlearn(str(shipped()["row_target"]), model=target_path, output_dir=str(tmp_path / "run"),
                             retain_budget="none", reverse_rows="false", num_train_epochs=20, eval_suite="none",
                             disable_tqdm=True, logging_steps=5)
    before, after = gap(target_path), gap(str(res.model_dir))
    assert after < 0.5 * before, (before, after)


def test_alternatives_share_the_forward_pass_with_forget_and_retain_rows(target_path):
    """One alternative per forget row rides in the batch after the retain rows: each part's logits are its own
    rows', and the anchor is the hand-computed max(0, ℓ_alt − ℓ⁰) on them."""
    from llm_forget.data.encode import Encoder
    from llm_forget.methods.base import sequence_logp
    from llm_forget.models import load_model, load_tokenizer
    from llm_forget.trainer import Batch, Collator, Reference, UnlearnDataset

    model, tok = load_model(target_path), load_tokenizer(target_path)
    enc = Encoder(tok)
    forget, retain = split("forget")[:3], split("retain")[:5]
    alts = [{**forget[0], "answer": "Oslo."}, {**forget[1], "answer": "Maroon."}]
    ds = UnlearnDataset(enc.rows(forget), enc.rows(retain))
    ds.alternatives = [[(a, 0.5)] for a in enc.rows(alts)] + [[]]  # the third row has none
    batch = Collator(tok.pad_token_id)([ds[i] for i in range(3)])
    assert batch["alt"]["input_ids"].shape[0] == 2 and batch["retain"]["input_ids"].shape[0] == 3
    b = Batch(model, batch, Reference("none"))

    def alone(item):
        one = Collator(tok.pad_token_id)([{"index": 0, "forget": item}])["forget"]
        return sequence_logp(model(input_ids=one["input_ids"]).logits, one["labels"])

    with torch.no_grad():
        lp, n = sequence_logp(b.alt_logits, b.alt["labels"])
        for k, item in enumerate(enc.rows(alts)):
            want = alone(item)
            assert lp[k].item() == pytest.approx(want[0].item(), abs=1e-4) and n[k] == want[1]
        r_lp, _ = sequence_logp(b.retain_logits, b.retain["labels"])
        assert r_lp[0].item() == pytest.approx(alone(ds[0]["retain"])[0].item(), abs=1e-4)
        m = RowTarget(anchor=1.0, retain_loss="nll", targets=[1.0, 1.0, 1.0])
        out = m.loss(b)
        assert out["anchor"].item() == pytest.approx(torch.relu(-lp / n - 0.5).mean().item(), rel=1e-5)


def test_without_never_seen_rows_it_says_what_it_needs(target_path):
    """No holdout and a single forget row (no answers to swap among): one clear error before any training."""
    from llm_forget.data.encode import Encoder
    from llm_forget.errors import UserError
    from llm_forget.models import load_model, load_tokenizer

    tok = load_tokenizer(target_path)
    with pytest.raises(UserError, match="row_target needs never-seen rows: a holdout, or at least 2 forget rows"):
        RowTarget().prepare_targets(load_model(target_path), Encoder(tok), split("forget")[:1], [], split("retain"),
                                    tok.pad_token_id)
