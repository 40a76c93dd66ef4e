"""ROME: rank-one model editing of one MLP output projection (Meng et al., 2022).

    Ŵ = W + (v* − W k*) (C⁻¹k*)ᵀ / ((C⁻¹k*)ᵀ k*)

W (out × in) maps keys to values, k* is the subject's key, v* = W k* + δ the value that makes
the model say the new object, C = E[k kᵀ] over a text corpus. Then Ŵ k* = v* exactly, and a key
k with (C⁻¹k*)ᵀ k ≈ 0 is unaffected. Solved in float64. Several requests are applied one
after another (sequential ROME), each on the already-edited model.
"""

from __future__ import annotations

import logging

import torch
from tqdm.auto import tqdm

from .hooks import add_to_weight, weight_view
from .locate import ValueConfig, compute_keys, compute_value_delta
from .result import EditResult

logger = logging.getLogger(__name__)


def rome_update(W: torch.Tensor, k: torch.Tensor, v: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """Δ (out × in, float64) such that (W + Δ) k = v, with Δ = (v − W k) uᵀ / (uᵀ k), u = C⁻¹ k."""
    W, k, v, C = (t.to(torch.float64) for t in (W, k, v, C))
    u = torch.linalg.solve(C, k)
    return torch.outer(v - W @ k, u) / (u @ k)


def rome_edit(model, tokenizer, requests, layer: int, C: torch.Tensor, key_prefixes: list[str],
              value_prefixes: list[str], arch, cfg: ValueConfig = ValueConfig(),
              result: EditResult | None = None, progress: bool = True) -> EditResult:
    """Apply ROME for each request in turn at `layer` (in place). Returns an EditResult holding
    the original weights (for `restore()`) and per-request diagnostics."""
    from ..models import get_mlp_out

    result = result or EditResult(model)
    mod = get_mlp_out(model, layer, arch)
    result.remember(mod, arch.conv1d)
    for r in tqdm(requests, desc="ROME", disable=not progress, leave=False):
        k = compute_keys(model, tokenizer, [r], [layer], key_prefixes, arch)[layer][0]
        delta, h0 = compute_value_delta(model, tokenizer, r, layer, value_prefixes, arch, cfg, "mlp")
        W = weight_view(mod, arch.conv1d).detach()
        v = W.double() @ k.double() + delta.double()
        upd = rome_update(W, k, v, C)
        add_to_weight(mod, arch.conv1d, upd)
        result.log.append({"case_id": r.case_id, "layer": layer, "delta_norm": float(delta.norm()),
                           "delta_rel": float(delta.norm() / h0.norm()), "update_norm": float(upd.norm())})
    return result
