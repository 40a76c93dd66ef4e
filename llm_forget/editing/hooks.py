"""Forward hooks that read the input of an MLP output projection (the key k) or add a vector
to a module's output at chosen token positions, and the weight view ROME-style formulas use.

All module paths come from `llm_forget.models.arch_for` (keyed by `config.model_type`).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch


class StopForward(Exception):
    """Raised inside a hook to end a forward pass early (nothing after the last needed layer runs)."""


def weight_view(module, conv1d: bool) -> torch.Tensor:
    """The projection's weight as (out, in), so that output = W @ k (+ bias).
    GPT-2's Conv1D stores (in, out): its transpose is returned (a view, writable in place)."""
    return module.weight.T if conv1d else module.weight


@torch.no_grad()
def add_to_weight(module, conv1d: bool, delta: torch.Tensor) -> None:
    """W ← W + Δ with Δ given as (out, in), in the weight's own dtype."""
    w = weight_view(module, conv1d)
    w.add_(delta.to(device=w.device, dtype=w.dtype))


def capture_inputs(modules: dict, stop_after=None):
    """Record the first positional input of each module in `modules` (name -> module) into the
    yielded dict (name -> tensor, detached). When `stop_after` names one of them, the forward
    pass is ended (StopForward) right after that module's input is read; the block absorbs it."""
    return _capture(modules, stop_after, inputs=True)


@contextmanager
def _capture(modules: dict, stop_after, inputs: bool):
    """capture_inputs (forward pre-hooks: the first positional input) or capture_outputs (forward hooks)."""
    got: dict = {}
    handles = []

    def make(name):
        def hook(_mod, args, out=None):
            got[name] = args[0].detach() if inputs else _first(out).detach()
            if name == stop_after:
                raise StopForward

        return hook

    try:
        for name, m in modules.items():
            register = m.register_forward_pre_hook if inputs else m.register_forward_hook
            handles.append(register(make(name)))
        try:
            yield got
        except StopForward:  # the forward was ended on purpose: what it read is in `got`
            pass
    finally:
        for h in handles:
            h.remove()


def _first(out):
    return out[0] if isinstance(out, tuple) else out


@contextmanager
def add_at_positions(module, delta: torch.Tensor, positions: torch.Tensor):
    """Add `delta[i]` to the module's output at (row i, token positions[i]) of every forward pass
    inside the block. delta: (B, d), positions: (B,) long. Differentiable w.r.t. delta."""
    rows = torch.arange(positions.shape[0])

    def hook(_mod, _args, out):
        h = _first(out)
        h = h.clone()
        h[rows, positions] = h[rows, positions] + delta.to(h.dtype)
        return (h, *out[1:]) if isinstance(out, tuple) else h

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def capture_outputs(modules: dict, stop_after=None):
    """Record each module's output (the hidden state for decoder blocks), detached. When `stop_after`
    names one of them, the forward pass is ended (StopForward) right after that module's output is
    read, so nothing after it runs; the block absorbs it."""
    return _capture(modules, stop_after, inputs=False)


@contextmanager
def frozen(model):
    """Parameters do not require grad inside the block (so backward stops at the edited layer)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in flags:
            p.requires_grad_(f)
