"""MEMIT: many edits at once, spread over a range of layers (Meng et al., 2023).

For each request i a target z_i = h_L,i + δ_i for the residual stream after the last layer L of
the range (δ from `locate.compute_value_delta`). Then for each layer l (ascending), with K₁ the
current keys (d_in × N) and R = (z − h_L(current)) / (L − l + 1) the residual still missing
(d_out × N):
    Δ_l = R K₁ᵀ (λ C₀ + K₁ K₁ᵀ)⁻¹,
C₀ = E[k kᵀ] over a corpus, λ (mom2 weight, ~15,000) trades edit strength for preservation.
Solved in float64. `batch_size` splits the requests into successive batches (sequential MEMIT).
The targets z, the costly part (one v* optimisation each), are cached on disk per model weights
and settings, so trying another λ re-solves in about a minute instead of redoing them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .hooks import add_to_weight, capture_outputs
from .locate import ValueConfig, compute_keys, compute_value_delta, encode, subject_end
from .result import EditResult

logger = logging.getLogger(__name__)


def memit_solve(R: torch.Tensor, K: torch.Tensor, C: torch.Tensor, lam: float) -> torch.Tensor:
    """Δ = R Kᵀ (λC + K Kᵀ)⁻¹ in float64. R: (d_out, N), K: (d_in, N), C: (d_in, d_in)."""
    R, K, C = R.double(), K.double(), C.double()
    A = lam * C + K @ K.T
    return torch.linalg.solve(A, K @ R.T).T  # A is symmetric


@torch.no_grad()
def block_outputs(model, tokenizer, requests, layer: int, arch, batch_size: int = 32) -> torch.Tensor:
    """Residual stream after block `layer` at each request's subject last token (bare prompt)."""
    from ..models import get_layers

    block = get_layers(model, arch)[layer]
    device = next(model.parameters()).device
    out = []
    for s in range(0, len(requests), batch_size):
        rs = requests[s:s + batch_size]
        x, m, pos, _ = encode(tokenizer, [r.prompt for r in rs], [subject_end(r.prompt, r.subject) for r in rs])
        with capture_outputs({"b": block}, stop_after="b") as got:  # the blocks above it are not needed
            model(input_ids=x.to(device), attention_mask=m.to(device))
        out.append(got["b"][torch.arange(len(rs)), pos.to(device)].float().cpu())
    return torch.cat(out)


def _target_path(model_id: str, layer: int, request, prefixes, arch, cfg, batched: bool = False) -> Path:
    from ..zoo import cache_dir

    spec = {"layer": layer, "prompt": request.prompt, "subject": request.subject,
            "target_new": request.target_new, "prefixes": list(prefixes), "arch": repr(arch), "v": asdict(cfg)}
    if batched:  # equal to one-by-one within float rounding only, so kept apart from its entries
        spec["solver"] = "batched"
    blob = json.dumps(spec, sort_keys=True)
    return cache_dir() / "targets" / model_id / f"{hashlib.sha256(blob.encode()).hexdigest()[:24]}.safetensors"


def _solve_targets(model, tokenizer, requests, layer, value_prefixes, arch, cfg, v_batch, progress):
    """z = h_L + δ for requests not in the cache: one by one (v_batch 1) or in batches."""
    from .batched_values import compute_value_deltas

    if v_batch <= 1:
        out = []
        for r in tqdm(requests, desc="v*", disable=not progress, leave=False):
            delta, h0 = compute_value_delta(model, tokenizer, r, layer, value_prefixes, arch, cfg, "block")
            out.append(h0.cpu().float() + delta.cpu().float())
        return out
    order = sorted(range(len(requests)), key=lambda i: len(requests[i].prompt))  # less padding
    out = [None] * len(requests)
    bar = tqdm(total=len(requests), desc="v* (batched)", disable=not progress, leave=False)
    for s in range(0, len(order), v_batch):
        idx = order[s:s + v_batch]
        delta, h0, _ = compute_value_deltas(model, tokenizer, [requests[i] for i in idx], layer, value_prefixes,
                                            arch, cfg, "block")
        for j, i in enumerate(idx):
            out[i] = (h0[j] + delta[j]).cpu().float()
        bar.update(len(idx))
    bar.close()
    return out


def value_targets(model, tokenizer, requests, layer, value_prefixes, arch, cfg, progress=True,
                  cache: bool = True, v_batch: int = 1):
    """z_i = h_L,i + δ_i for each request (N, d). δ_i are optimised one by one (v_batch 1) or
    v_batch requests at a time (`batched_values`). Each z is cached on disk under
    cache_dir()/targets/, keyed by (model weights hash, layer, request, prefixes, v* settings,
    solver), so a rerun with another λ (or a λ sweep) skips the v* optimisations, the costly part."""
    from safetensors.torch import load_file, save_file

    from .covariance import weights_hash
    from .residual import check_mlp_adds_to_residual

    check_mlp_adds_to_residual(model, layer, arch)
    mid = weights_hash(model) if cache else None
    paths = [_target_path(mid, layer, r, value_prefixes, arch, cfg, v_batch > 1) if cache else None
             for r in requests]
    zs = [load_file(str(p))["z"] if p is not None and p.exists() else None for p in paths]
    todo = [i for i, z in enumerate(zs) if z is None]
    if len(todo) < len(requests):
        logger.info("v*: %d of %d targets read from the cache (%s)", len(requests) - len(todo), len(requests),
                    paths[0].parent)
    solved = _solve_targets(model, tokenizer, [requests[i] for i in todo], layer, value_prefixes, arch, cfg,
                            v_batch, progress) if todo else []
    for i, z in zip(todo, solved):
        zs[i] = z
        if paths[i] is not None:
            from ..io import atomic_file

            with atomic_file(paths[i]) as tmp:
                save_file({"z": z.contiguous()}, str(tmp))
    return torch.stack(zs)


def distribute(model, tokenizer, requests, layers, zs, key_prefixes, arch, solve, result: EditResult, state=None):
    """Spread the residual z − h_L over `layers`, calling `solve(l, R, K)` -> Δ_l for each."""
    from ..models import get_mlp_out

    last = layers[-1]
    keys_used = {}
    for i, layer in enumerate(layers):
        K = compute_keys(model, tokenizer, requests, [layer], key_prefixes, arch)[layer].T  # (d_in, N)
        cur = block_outputs(model, tokenizer, requests, last, arch)
        R = (zs - cur).T / (len(layers) - i)  # (d_out, N)
        upd = solve(layer, R, K)
        mod = get_mlp_out(model, layer, arch)
        result.remember(mod, arch.conv1d)
        add_to_weight(mod, arch.conv1d, upd)
        keys_used[layer] = K
        result.log.append({"layer": layer, "n": len(requests), "update_norm": float(upd.norm()),
                           "residual_norm": float(R.norm(dim=0).mean())})
    return keys_used


def memit_edit(model, tokenizer, requests, layers: list[int], Cs: dict, key_prefixes, value_prefixes, arch,
               cfg: ValueConfig = ValueConfig(weight_decay=0.5, clamp_norm=0.75), lam: float = 15000.0,
               batch_size: int | None = None, result: EditResult | None = None, progress: bool = True,
               v_batch: int = 32, cache: bool = True, after_batch=None) -> EditResult:
    """MEMIT in place on `model`; all requests at once, or in successive batches of `batch_size`
    (`after_batch(i, batch)` is called after batch i is written, e.g. to measure a lifelong stream).
    v_batch: requests whose v* are optimised together (1 = one by one); cache: the targets cache."""
    result = result or EditResult(model)
    layers = sorted(layers)
    bs = batch_size or len(requests)
    for i, s in enumerate(range(0, len(requests), bs)):
        batch = requests[s:s + bs]
        zs = value_targets(model, tokenizer, batch, layers[-1], value_prefixes, arch, cfg, progress, cache, v_batch)
        distribute(model, tokenizer, batch, layers, zs, key_prefixes, arch,
                   lambda layer, R, K: memit_solve(R, K, Cs[layer], lam), result)
        if after_batch is not None:
            after_batch(i, batch)
    return result
