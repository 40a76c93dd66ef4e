"""Does the MLP output add straight into the residual stream? MEMIT and AlphaEdit assume so.

They optimise a target z for the residual stream after block L and then ask the MLP output
projections to produce z − h: that is only right when block(x) = x + attn(...) + W k, with
nothing between the projection W and the addition. Architectures that normalise the MLP
output before adding it (Gemma 2's post_feedforward_layernorm:
h ← h + norm(W k)) break this: a change r of W k changes the residual by norm(W k + r) − norm(W k),
not by r. Rather than trusting a name table, the check measures it: add a vector r to the
projection's output at one position and compare the block's output change with r.
ROME is not affected (its δ is solved in the projection's own output space).
"""

from __future__ import annotations

import torch

from ..errors import UserError
from .hooks import add_at_positions, capture_outputs


@torch.no_grad()
def residual_gain(model, layer: int, arch, n_tokens: int = 6, seed: int = 0) -> float:
    """‖Δ block output − r‖ / ‖r‖ after adding r (norm 0.5 ‖W k‖, seeded direction) to the MLP
    output projection's output at the last of `n_tokens` token positions. 0 when the projection
    adds straight into the residual stream."""
    from ..models import get_layers, get_mlp_out

    block = get_layers(model, arch)[layer]
    mlp = get_mlp_out(model, layer, arch)
    device = next(model.parameters()).device
    vocab = model.get_input_embeddings().weight.shape[0]
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, vocab, (1, n_tokens), generator=g).to(device)
    pos = torch.tensor([n_tokens - 1])

    def run(add=None):
        from contextlib import nullcontext

        ctx = add_at_positions(mlp, add, pos) if add is not None else nullcontext()
        with ctx, capture_outputs({"mlp": mlp, "block": block}, stop_after="block") as got:
            model(input_ids=x)
        return got

    was_training = model.training
    model.eval()
    try:
        ref = run()
        w = ref["mlp"][0, -1].float()
        r = torch.randn(w.shape[-1], generator=g).to(device)
        r = r / r.norm() * 0.5 * w.norm().clamp(min=1e-3)
        out = run(r[None])
    finally:
        model.train(was_training)
    diff = (out["block"][0, -1].float() - ref["block"][0, -1].float())
    return float((diff - r).norm() / r.norm())


def check_mlp_adds_to_residual(model, layer: int, arch, tol: float | None = None) -> None:
    """UserError unless adding r to the MLP output changes block `layer`'s output by r (within
    `tol`: 1e-3 relative in fp32, 2e-2 in half precision)."""
    dtype = next(model.parameters()).dtype
    tol = tol if tol is not None else (1e-3 if dtype in (torch.float32, torch.float64) else 2e-2)
    err = residual_gain(model, layer, arch)
    if err > tol:
        kind = getattr(getattr(model, "config", None), "model_type", "this model")
        raise UserError(f"MEMIT/AlphaEdit need the MLP output added straight into the residual stream, but in "
                        f"{kind} (layer {layer}, {arch.mlp_out}) it is transformed first (a change r of the MLP "
                        f"output moves the block output by r ± {err:.0%}); use method rome, which edits in the "
                        f"projection's own output space")
