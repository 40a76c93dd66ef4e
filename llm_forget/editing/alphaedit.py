"""AlphaEdit: MEMIT's update projected onto the null space of preserved knowledge (Fang et al., 2025).

P = Û Ûᵀ with Û the singular vectors of C₀ = E[k kᵀ] whose singular values are below
`threshold` (2e-2): keys of ordinary text have (almost) no component there, so an update
Δ = Δ P leaves their outputs unchanged (Δ k₀ ≈ 0). Per layer, with K₁ the new keys, R the
residual (as in MEMIT) and K_p the keys of earlier edits (kept across sequential calls):
    Δᵀ = (P (K₁K₁ᵀ + K_pK_pᵀ) + L2·I)⁻¹ P K₁ Rᵀ,
whose solution satisfies Δ = Δ P. Solved in float64.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from .locate import ValueConfig
from .memit import distribute, value_targets
from .result import EditResult

logger = logging.getLogger(__name__)


def null_space_projection(C: torch.Tensor, threshold: float = 2e-2) -> torch.Tensor:
    """P = Û Ûᵀ, Û = singular vectors of C with singular value < threshold (float64)."""
    U, S, _ = torch.linalg.svd(C.double())
    Uh = U[:, S < threshold]
    return Uh @ Uh.T


def alphaedit_solve(R: torch.Tensor, K: torch.Tensor, P: torch.Tensor, KpKp: torch.Tensor | None,
                    l2: float = 10.0) -> torch.Tensor:
    """Δ (d_out × d_in, float64) = [(P(KKᵀ + K_pK_pᵀ) + L2·I)⁻¹ P K Rᵀ]ᵀ."""
    R, K, P = R.double(), K.double(), P.double()
    M = K @ K.T + (KpKp.double() if KpKp is not None else 0)
    A = P @ M + l2 * torch.eye(P.shape[0], dtype=torch.float64)
    return torch.linalg.solve(A, P @ K @ R.T).T


@dataclass
class AlphaEditState:
    """Per-layer projections and the running K_pK_pᵀ of earlier edits (sequential editing)."""

    P: dict
    KpKp: dict = field(default_factory=dict)

    @classmethod
    def from_moments(cls, Cs: dict, threshold: float = 2e-2) -> "AlphaEditState":
        P = {}
        for layer, C in Cs.items():
            P[layer] = null_space_projection(C, threshold)
            dim = int(round(float(torch.trace(P[layer]))))
            logger.info("AlphaEdit layer %d: null space of dimension %d of %d", layer, dim, C.shape[0])
            if dim == 0:
                from ..errors import UserError

                raise UserError(f"AlphaEdit: no singular value of layer {layer}'s key statistics is below "
                                f"nullspace_threshold={threshold:g}; raise the threshold")
        return cls(P)


def alphaedit_edit(model, tokenizer, requests, layers, state: AlphaEditState, key_prefixes, value_prefixes, arch,
                   cfg: ValueConfig = ValueConfig(weight_decay=0.5, clamp_norm=0.75), l2: float = 10.0,
                   batch_size: int | None = None, result: EditResult | None = None, progress: bool = True,
                   v_batch: int = 32, cache: bool = True, after_batch=None):
    """AlphaEdit in place; batches of `batch_size` requests edited one after another, each batch's
    keys added to `state.KpKp` so later batches keep earlier edits (`after_batch(i, batch)` is
    called after each; v_batch and cache as in `memit_edit`)."""
    result = result or EditResult(model)
    layers = sorted(layers)
    bs = batch_size or len(requests)
    for i, s in enumerate(range(0, len(requests), bs)):
        batch = requests[s:s + bs]
        zs = value_targets(model, tokenizer, batch, layers[-1], value_prefixes, arch, cfg, progress, cache, v_batch)
        keys = distribute(model, tokenizer, batch, layers, zs, key_prefixes, arch,
                          lambda layer, R, K: alphaedit_solve(R, K, state.P[layer], state.KpKp.get(layer), l2),
                          result)
        for layer, K in keys.items():
            kk = K.double() @ K.double().T
            state.KpKp[layer] = state.KpKp[layer] + kk if layer in state.KpKp else kk
        if after_batch is not None:
            after_batch(i, batch)
    return result
