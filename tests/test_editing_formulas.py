"""Unit tests of the editing formulas and metrics on hand-computed values (no model)."""

import json
import math

import pytest
import torch

from llm_forget.editing.alphaedit import alphaedit_solve, null_space_projection
from llm_forget.editing.config import parse_layers
from llm_forget.editing.covariance import second_moment_update
from llm_forget.editing.hooks import add_to_weight, weight_view
from llm_forget.kl import kl_rows
from llm_forget.editing.memit import memit_solve
from llm_forget.editing.metrics_counterfact import ngram_entropy, prob_margin, prob_wins
from llm_forget.editing.metrics_zsre import token_accuracy, unchanged_fraction
from llm_forget.editing.requests import EditRequest, counterfact_request, zsre_request
from llm_forget.editing.rome import rome_update
from llm_forget.editing.task_vectors import apply, negate, select_lambda, task_vector
from llm_forget.errors import UserError


def _spd(d, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(d, 3 * d, generator=g, dtype=torch.float64)
    return A @ A.T / (3 * d)


def test_rome_update_maps_key_to_value_on_a_random_linear_layer():
    torch.manual_seed(0)
    lin = torch.nn.Linear(24, 16)
    k, v = torch.randn(24), torch.randn(16)
    upd = rome_update(lin.weight.detach(), k, v, _spd(24))
    add_to_weight(lin, False, upd)
    with torch.no_grad():
        assert torch.allclose(lin(k) - lin.bias, v, atol=1e-4)


def test_rome_update_on_conv1d_uses_the_transpose():
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(1)
    conv = Conv1D(16, 24)  # nf=16 outputs, nx=24 inputs; weight stored (24, 16)
    k, v = torch.randn(24), torch.randn(16)
    W = weight_view(conv, True)
    assert W.shape == (16, 24)
    add_to_weight(conv, True, rome_update(W.detach(), k, v, _spd(24, 1)))
    with torch.no_grad():
        assert torch.allclose(conv(k[None])[0] - conv.bias, v, atol=1e-4)


def test_rome_update_leaves_c_orthogonal_keys_alone():
    C = torch.diag(torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64))
    W = torch.zeros(2, 3, dtype=torch.float64)
    k = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    upd = rome_update(W, k, torch.tensor([1.0, 2.0], dtype=torch.float64), C)
    # u = C^-1 k = e1, so keys with no e1 component are untouched; by hand Δ = [[1,0,0],[2,0,0]]
    assert torch.allclose(upd, torch.tensor([[1.0, 0, 0], [2.0, 0, 0]], dtype=torch.float64))


def test_memit_solve_is_the_regularised_least_squares_optimum():
    """Δ minimises ||Δ K − R||² + λ tr(Δ C Δᵀ): the same problem as ordinary least squares on the
    stacked system Δ [K, √λ L] ≈ [R, 0] with C = L Lᵀ, solved here by float64 lstsq (QR), not by
    the normal equations. As λ → 0 with fewer keys than dimensions, the edited keys map onto R."""
    g = torch.Generator().manual_seed(0)
    R = torch.randn(12, 5, generator=g)
    K = torch.randn(20, 5, generator=g)
    C = _spd(20, 2)
    lam = 15.0
    got = memit_solve(R, K, C, lam)
    assert got.dtype == torch.float64 and got.shape == (12, 20)
    L = torch.linalg.cholesky(C)
    A = torch.cat([K.double(), math.sqrt(lam) * L], 1).T  # (N + d_in, d_in)
    B = torch.cat([R.double(), torch.zeros(12, 20, dtype=torch.float64)], 1).T
    lstsq = torch.linalg.lstsq(A, B, driver="gelsd").solution.T
    assert torch.allclose(got, lstsq, atol=1e-9)

    def objective(D):
        return float(((D @ K.double() - R.double()) ** 2).sum() + lam * torch.trace(D @ C @ D.T))

    best = objective(got)
    for _ in range(5):  # any step away costs more
        assert objective(got + 1e-3 * torch.randn(12, 20, generator=g, dtype=torch.float64)) > best
    tiny = memit_solve(R, K, C, 1e-9)
    assert torch.allclose(tiny @ K.double(), R.double(), atol=1e-5)  # keys -> targets
    assert float((got @ K.double() - R.double()).norm()) > 1e-3  # λ = 15 trades some fit for small Δ


def test_null_space_projection_keeps_small_singular_directions():
    U, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3)))
    C = U @ torch.diag(torch.tensor([5.0, 3.0, 1.0, 0.5, 1e-3, 1e-4], dtype=torch.float64)) @ U.T
    P = null_space_projection(C, 2e-2)
    assert torch.allclose(P @ P, P, atol=1e-10) and torch.allclose(P, P.T, atol=1e-12)
    assert round(float(torch.trace(P))) == 2
    assert torch.allclose(P @ U[:, 4], U[:, 4], atol=1e-10) and float((P @ U[:, 0]).norm()) < 1e-10


def test_alphaedit_update_lies_in_the_projected_null_space():
    g = torch.Generator().manual_seed(4)
    U, _ = torch.linalg.qr(torch.randn(10, 10, dtype=torch.float64, generator=g))
    s = torch.tensor([4, 3, 2, 1, 0.5, 0.2, 1e-3, 1e-3, 1e-4, 1e-5], dtype=torch.float64)
    C = U @ torch.diag(s) @ U.T
    P = null_space_projection(C, 2e-2)
    K, R = torch.randn(10, 3, generator=g, dtype=torch.float64), torch.randn(7, 3, generator=g, dtype=torch.float64)
    Kp = torch.randn(10, 2, generator=g, dtype=torch.float64)
    delta = alphaedit_solve(R, K, P, Kp @ Kp.T, l2=1.0)
    assert delta.shape == (7, 10)
    assert torch.allclose(delta @ P, delta, atol=1e-10)  # Δ = ΔP
    for i in range(6):  # preserved-knowledge directions are not changed
        assert float((delta @ U[:, i]).norm()) < 1e-10


def test_second_moment_update_by_hand():
    acc = torch.zeros(2, 2, dtype=torch.float64)
    second_moment_update(acc, torch.tensor([[1.0, 2.0], [3.0, 0.0]]))
    assert torch.equal(acc, torch.tensor([[10.0, 2.0], [2.0, 4.0]], dtype=torch.float64))


def test_task_vector_skips_integer_buffers_and_negates():
    pre = {"w": torch.tensor([1.0, 2.0]), "pos": torch.tensor([0, 1])}
    ft = {"w": torch.tensor([1.5, 1.0]), "pos": torch.tensor([0, 1])}
    tau = task_vector(pre, ft)
    assert set(tau) == {"w"} and torch.allclose(tau["w"], torch.tensor([0.5, -1.0]))
    assert torch.allclose(apply(pre, tau, 2.0)["w"], torch.tensor([2.0, 0.0]))
    # θ_t − λ(θ_r − θ_t) with λ = 2: [1,2] − 2·[0.5,−1] = [0, 4]
    assert torch.allclose(negate(pre, ft, 2.0)["w"], torch.tensor([0.0, 4.0]))
    with pytest.raises(UserError):
        task_vector(pre, {"w": torch.zeros(3), "pos": pre["pos"]})


def test_forget_minus_retain_task_vector():
    """τ_forget − β·τ_retain, key by key; vectors of other architectures are refused."""
    from llm_forget.editing.task_vectors import combine

    tau_f = {"w": torch.tensor([0.5, -1.0]), "b": torch.tensor([2.0])}
    tau_r = {"w": torch.tensor([0.25, 1.0]), "b": torch.tensor([-1.0])}
    got = combine(tau_f, tau_r, -2.0)
    assert torch.allclose(got["w"], torch.tensor([0.0, -3.0])) and torch.allclose(got["b"], torch.tensor([4.0]))
    assert torch.equal(combine(tau_f, tau_r, 0.0)["w"], tau_f["w"])  # β = 0: plain negation's vector
    with pytest.raises(UserError):
        combine(tau_f, {"w": tau_r["w"]}, -1.0)


def test_select_lambda_picks_most_forgetting_within_the_utility_budget():
    rows = [{"lambda": 1, "forget_perplexity": 2.0, "retain_probability": 0.80},
            {"lambda": 2, "forget_perplexity": 5.0, "retain_probability": 0.76},
            {"lambda": 4, "forget_perplexity": 50.0, "retain_probability": 0.50}]
    assert select_lambda(rows, target_utility=0.8, fraction=0.95)["lambda"] == 2  # 0.76 ≥ 0.95·0.8 = 0.76
    assert select_lambda(rows, target_utility=0.9, fraction=0.95) is None


def test_counterfact_probability_family_by_hand():
    assert prob_wins([0.1, 2.0, 0.5], [1.0, 1.0, 0.4]) == pytest.approx(1 / 3)
    assert prob_margin([0.0], [math.log(2)]) == pytest.approx(0.5)
    # "a b a b": bigrams ab, ba, ab -> H2 = H(2/3, 1/3) = 0.9183 bits; trigrams aba, bab -> H3 = 1 bit
    h2 = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))
    assert ngram_entropy("a b a b") == pytest.approx((2 / 3 * h2 + 4 / 3 * 1.0) / 2)
    assert ngram_entropy("x x x x x x") == 0.0


def test_zsre_token_accuracy_family_by_hand():
    assert token_accuracy([5, 6, 7], [5, 0, 7]) == pytest.approx(2 / 3)
    assert unchanged_fraction([1, 2, 3, 4], [1, 2, 0, 4]) == pytest.approx(0.75)
    assert math.isnan(token_accuracy([], []))


def test_kl_locality_term_by_hand():
    z = torch.zeros(1, 2)
    assert float(kl_rows(z, z).mean()) == pytest.approx(0.0)
    # p_base = (1/2, 1/2), p_new = (0.8, 0.2): KL = 0.5 ln(0.5/0.8) + 0.5 ln(0.5/0.2)
    new = torch.log(torch.tensor([[0.8, 0.2]]))
    assert float(kl_rows(z, new).mean()) == pytest.approx(0.5 * math.log(0.625) + 0.5 * math.log(2.5), rel=1e-5)


def test_requests_check_subject_and_formats():
    with pytest.raises(UserError, match="does not occur"):
        EditRequest(prompt="Paris is the capital of", subject="Berlin", target_new="Italy")
    r = EditRequest(prompt="{} plays the", subject="Ada", target_new="harp")
    assert r.prompt == "Ada plays the"
    cf = counterfact_request({"case_id": 1, "prompt": "BMW E23, developed by", "subject": "BMW E23",
                              "target_new": "Suzuki", "ground_truth": "BMW", "rephrase_prompt": "BMW E23 is made by",
                              "locality_prompt": "BMW M3 is a product of", "locality_ground_truth": "BMW"})
    assert cf.target_true == "BMW" and cf.neighbourhood == [("BMW M3 is a product of", "BMW")]
    z = zsre_request({"subject": "UniFirst", "src": "What is the product made by UniFirst?", "alt": "drones",
                      "answers": ["uniform"], "rephrase": "What does UniFirst make?", "loc": "nq question: x",
                      "loc_ans": "y"})
    assert z.target_new == "drones" and z.target_true == "uniform" and z.rephrase == ["What does UniFirst make?"]
    assert parse_layers("4-6,8") == [4, 5, 6, 8]
    with pytest.raises(UserError):
        parse_layers("a")


def test_readers_parse_counterfact_and_zsre_files(tmp_path):
    """Files in the two published formats (rows as in counterfact-edit-1k.json and
    zsre_mend_train-1k.json), written here: JSON and JSONL, a zsRE row with an empty new answer."""
    from llm_forget.editing.requests import read_counterfact, read_requests, read_zsre

    cf_rows = [{"case_id": 3087 + i, "prompt": f"Player {i} professionally plays the sport", "subject": f"Player {i}",
                "target_new": "baseball", "ground_truth": "basketball", "rephrase_prompt": f"Player {i} is best at",
                "locality_prompt": "Shaquille O'Neal plays", "locality_ground_truth": "basketball"} for i in range(3)]
    zs_rows = [{"subject": f"Firm {i}", "src": f"What is the product made by Firm {i}?", "pred": "uniform",
                "rephrase": f"What does Firm {i} make?", "alt": "" if i == 1 else "drones", "answers": ["uniform"],
                "loc": "nq question: who wrote hamlet", "loc_ans": "Shakespeare"} for i in range(4)]
    cf_path, zs_path = tmp_path / "cf.json", tmp_path / "zs.jsonl"
    cf_path.write_text(json.dumps(cf_rows))
    zs_path.write_text("\n".join(json.dumps(r) for r in zs_rows) + "\n")
    cf, zs = read_counterfact(cf_path), read_zsre(zs_path)
    assert [r.case_id for r in cf] == [3087, 3088, 3089]
    assert all(r.subject in r.prompt and r.target_true == "basketball" and r.neighbourhood for r in cf)
    assert [r.subject for r in zs] == ["Firm 0", "Firm 2", "Firm 3"]  # the empty new answer is skipped
    assert all(r.target_new == "drones" and r.rephrase for r in zs)
    assert read_requests(zs_path, limit=3)[0].prompt == zs[0].prompt  # format told by the first row
    assert read_requests(cf_path)[2].prompt == cf[2].prompt
    with pytest.raises(UserError, match="empty target_new"):
        read_zsre(zs_path, strict=True)


def test_edit_cli_options_and_one_line_errors(tmp_path, capsys):
    from llm_forget.cli import main

    assert main(["edit", "--options"]) == 0
    assert "--mom2_weight" in capsys.readouterr().out
    assert main(["edit", "memit", "--method", "memmit", "--output_dir", str(tmp_path / "x")]) == 2
    assert "did you mean 'memit'" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text('[{"prompt": "Paris is the capital of", "subject": "Berlin", "target_new": "Italy"}]')
    from llm_forget.editing.requests import read_counterfact

    with pytest.raises(UserError, match="does not occur"):
        read_counterfact(bad, strict=True)
    with pytest.raises(UserError, match="none of its 1 rows can be edited"):
        read_counterfact(bad)  # skipping every row would leave nothing to edit
