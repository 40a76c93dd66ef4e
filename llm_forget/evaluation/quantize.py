"""The quantization attack's round trip: b-bit per-channel symmetric round-to-nearest of every
nn.Linear weight (robustness.py runs it on the unlearned and the retain model)."""

from __future__ import annotations

import copy

import torch


def quantize_rtn(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-output-channel symmetric round-to-nearest quantization round trip of a weight matrix (out, in).

    q_max = 2^(bits−1) − 1;  s_i = max_j |w_ij| / q_max  (s_i = 1 for an all-zero row);
    ŵ_ij = s_i · clamp(round(w_ij / s_i), −q_max, q_max).
    Returns ŵ in w's dtype (computed in fp32). Error |ŵ − w| ≤ s_i / 2; more bits = closer to w."""
    if bits < 2:
        raise ValueError("bits must be >= 2")
    qmax = 2 ** (bits - 1) - 1
    x = w.float()
    flat = x.reshape(x.shape[0], -1) if x.dim() > 1 else x.reshape(1, -1)
    s = flat.abs().amax(1, keepdim=True) / qmax
    s = torch.where(s == 0, torch.ones_like(s), s)
    q = torch.clamp(torch.round(flat / s), -qmax, qmax) * s
    return q.reshape(w.shape).to(w.dtype)


@torch.no_grad()
def quantize_model(model, bits: int):
    """A deep copy of `model` whose nn.Linear weights (a tied lm_head/embedding once) went through
    `quantize_rtn`. The input model is not changed."""
    m = copy.deepcopy(model)
    seen = set()
    for mod in m.modules():
        if isinstance(mod, torch.nn.Linear) and id(mod.weight) not in seen:
            seen.add(id(mod.weight))
            mod.weight.copy_(quantize_rtn(mod.weight, bits))
    return m
