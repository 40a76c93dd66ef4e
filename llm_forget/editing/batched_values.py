"""v* for many requests at once: one forward/backward per step over a batch of requests.

The same objective as `locate.compute_value_delta`, for B requests together. Request i has its
own δ_i (one row of a (B, d) tensor), added at its own subject position in its own rows
(its rewrite prompts and its KL prompt). The loss summed over the batch,
    L = Σ_i [ NLL_i(δ_i) + kl_factor · KL_i(δ_i) + weight_decay · ‖δ_i‖² / ‖h0_i‖² ],
has ∂L/∂δ_i = ∂L_i/∂δ_i because the rows of different requests never meet (attention stays
inside a row), and Adam's update is elementwise, so each δ_i follows the path it would follow
alone. A request stops when its NLL falls below `stop_nll` (checked before the step, as
one-by-one): its δ is frozen and its rows leave the batch, so the forward shrinks as requests
converge. The tokens before a row's subject position do not depend on δ: their keys/values are
computed once (`PrefixCache`) and each step runs only the rest; nor do the blocks up to the edited
one (δ enters at its output), so where the decoder allows it each step starts at block `layer + 1`
from the stored output of block `layer` plus δ. What differs from one-by-one is float rounding only
(other matmul shapes and padding); tests/test_editing_batched.py bounds it.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from .hooks import add_at_positions, capture_outputs, frozen
from .locate import ValueConfig, encode, subject_end, template

logger = logging.getLogger(__name__)


def _rows(tokenizer, requests, prefixes, n_prefixes):
    """Encode every request's rewrite prompts and KL prompt. Returns x, m, pos, y, owner (row ->
    request), is_kl (row is the KL prompt), first (row of each request's bare prompt)."""
    texts, ends, targets, owner, is_kl = [], [], [], [], []
    for i, r in enumerate(requests):
        for p in prefixes[: n_prefixes + 1]:
            t = template(p, r.prompt)
            texts.append(t)
            ends.append(len(t) - len(r.prompt) + subject_end(r.prompt, r.subject))
            targets.append(r.target_new)
            owner.append(i)
            is_kl.append(False)
        texts.append(f"{r.subject} is a")
        ends.append(len(r.subject))
        targets.append(None)
        owner.append(i)
        is_kl.append(True)
    x, m, pos, y = encode(tokenizer, texts, ends, targets)
    owner, is_kl = torch.tensor(owner), torch.tensor(is_kl)
    first = torch.tensor([owner.tolist().index(i) for i in range(len(requests))])
    return x, m, pos, y, owner, is_kl, first


def _batch_losses(h, lm_head, x, m, y, owner, is_kl, n_req, kl_ref):
    """Per-request mean-over-prompts NLL (n_req,) and KL(p_δ ‖ p_0) (n_req,) from the final hidden
    states h of the rows given (x, m, y: their ids, mask and labels, in h's coordinates)."""
    rw = ~is_kl
    sel = y[:, 1:] != -100
    sel[is_kl] = False
    logits = lm_head(h[:, :-1][sel]).float()
    nll_tok = F.cross_entropy(logits, y[:, 1:][sel], reduction="none")
    per_row = torch.zeros(len(x), device=x.device).index_add(0, sel.nonzero()[:, 0], nll_tok)
    per_row = per_row / sel.sum(1).clamp(min=1)
    n_rw = torch.zeros(n_req, device=x.device).index_add(0, owner[rw], torch.ones_like(per_row[rw]))
    nll = torch.zeros(n_req, device=x.device).index_add(0, owner[rw], per_row[rw]) / n_rw
    kl_rows = is_kl.nonzero()[:, 0]
    last = m[kl_rows].sum(1) - 1
    kl_new = F.log_softmax(lm_head(h[kl_rows, last]).float(), -1)
    kl = torch.zeros(n_req, device=x.device).index_add(
        0, owner[kl_rows], (kl_new.exp() * (kl_new - kl_ref[owner[kl_rows]])).sum(-1))
    return nll, kl


PREFIX_CACHE_TYPES = ("llama", "mistral", "qwen2", "qwen3", "phi3", "gemma")
# decoders whose forward feeds inputs_embeds unscaled to `self.layers` and picks each block's mask by
# the block itself or by one layer type for all (gemma scales the embeddings; qwen2/3 index
# config.layer_types by position, so they qualify only when every layer has the same type)
LAYER_SKIP_TYPES = ("llama", "mistral", "qwen2", "qwen3", "phi3")


def can_cache_prefix(base, length: int) -> bool:
    """True when `PrefixCache` applies: a decoder type it knows, and no sliding-window attention that
    would cut rows of `length` tokens (the per-row cache it builds has full-attention layers only)."""
    cfg = getattr(base, "config", None)
    window = getattr(cfg, "sliding_window", None)
    sliding = ("sliding_attention" in (getattr(cfg, "layer_types", None) or [])
               or (window is not None and getattr(cfg, "use_sliding_window", True)))
    return getattr(cfg, "model_type", None) in PREFIX_CACHE_TYPES and not (sliding and window and window < length)


def can_skip_layers(base) -> bool:
    """True when `PrefixCache` may start each step after the edited block for this decoder."""
    cfg = getattr(base, "config", None)
    return (getattr(cfg, "model_type", None) in LAYER_SKIP_TYPES and hasattr(base, "layers")
            and len(set(getattr(cfg, "layer_types", None) or [None])) == 1)


class PrefixCache:
    """The tokens before each row's subject position do not depend on δ (causal attention), so
    their keys/values are computed once and each step runs only the tokens from the subject's
    last token on: per row, `suffix` = ids[pos:len] at positions pos.., with the prefix keys/values
    of its first `pos` tokens (padding masked). With `layer` given (and `can_skip_layers`), the
    suffix's output of block `layer` is stored too, and `forward(rows, delta)` adds δ to it at the
    subject's token (where the MLP output is added to the residual stream) and runs only the blocks
    after it. Same numbers as the full forward up to rounding."""

    def __init__(self, base, x, m, pos, layer: int | None = None):
        import inspect

        self.base = base
        self.kw = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
        lens = m.sum(1)
        p_len = max(int(pos.max()), 1)
        ar = torch.arange(x.shape[1], device=x.device)
        with torch.no_grad():  # right padded, so a real token only sees real tokens: no mask needed
            out = base(input_ids=x[:, :p_len], use_cache=True)
        cache = getattr(out, "cache", None) or out.past_key_values
        self.kv = [(k, v) for k, v, *_ in cache]
        self.past_mask = (ar[None, :p_len] < pos[:, None]).long()
        s_len = int((lens - pos).max())
        idx = (pos[:, None] + ar[None, :s_len]).clamp(max=x.shape[1] - 1)
        self.suffix_mask = (ar[None, :s_len] < (lens - pos)[:, None]).long()
        self.x = torch.gather(x, 1, idx) * self.suffix_mask
        self.pos_ids = pos[:, None] + ar[None, :s_len]
        self.idx = idx
        self.start = None
        if layer is not None and can_skip_layers(base):
            # the blocks above the edited one are not needed here
            with torch.no_grad(), capture_outputs({"h": base.layers[layer]}, stop_after="h") as got:
                self._run(torch.arange(len(x), device=x.device))
            self.mid, self.start = got["h"], layer + 1

    def labels(self, y):
        return torch.where(self.suffix_mask.bool(), torch.gather(y, 1, self.idx), torch.full_like(self.idx, -100))

    def _run(self, rows, inputs_embeds=None):
        from ..models import cache_from_kv

        cache = cache_from_kv([(k[rows], v[rows]) for k, v in self.kv])
        mask = torch.cat([self.past_mask[rows], self.suffix_mask[rows]], 1)
        ids = {"input_ids": self.x[rows]} if inputs_embeds is None else {"inputs_embeds": inputs_embeds}
        out = self.base(**ids, attention_mask=mask, position_ids=self.pos_ids[rows], use_cache=True,
                        **{self.kw: cache})
        return out.last_hidden_state

    def forward(self, rows, delta=None):
        """Final hidden states of the given rows' suffixes. With the layers skipped (`self.start`),
        `delta` (len(rows), d) is added at each suffix's first token (the subject's) to the stored
        output of the edited block; otherwise the caller adds δ with a hook."""
        if self.start is None:
            return self._run(rows)
        h = self.mid[rows].clone()
        h[:, 0] = h[:, 0] + delta.to(h.dtype)
        full = self.base.layers
        self.base.layers = torch.nn.ModuleList(list(full)[self.start:])  # each block keeps its layer_idx
        try:
            return self._run(rows, inputs_embeds=h)
        finally:
            self.base.layers = full


def compute_value_deltas(model, tokenizer, requests, layer: int, prefixes: list[str], arch, cfg: ValueConfig,
                         h0_module: str = "block", prefix_cache: bool = True):
    """Optimise δ_i for every request together (see module docstring). Returns (δ (B, d), h_0 (B, d),
    steps taken per request: list[int]); h_0 as in `compute_value_delta`; `prefix_cache` runs only
    the tokens from the subject on (`PrefixCache`) where `can_cache_prefix` allows it.
    Model weights are not changed."""
    from ..models import get_layers, get_mlp_out

    device = next(model.parameters()).device
    mlp = get_mlp_out(model, layer, arch)
    block = get_layers(model, arch)[layer]
    lm_head = model.get_output_embeddings()
    base = model.base_model if hasattr(model, "base_model") else model
    n = len(requests)
    x, m, pos, y, owner, is_kl, first = (t.to(device) for t in _rows(tokenizer, requests, prefixes, cfg.n_prefixes))
    d = mlp.out_features if hasattr(mlp, "out_features") else mlp.nf
    delta = torch.zeros(n, d, device=device, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=cfg.lr)
    active = torch.ones(n, dtype=torch.bool, device=device)
    steps = [cfg.steps] * n
    model.eval()
    with frozen(model):
        with torch.no_grad(), capture_outputs({"mlp": mlp, "block": block}) as got:
            h = base(input_ids=x, attention_mask=m).last_hidden_state
            kl_rows = is_kl.nonzero()[:, 0]
            kl_ref = F.log_softmax(lm_head(h[kl_rows, m[kl_rows].sum(1) - 1]).float(), -1)
        h0 = got[h0_module][first, pos[first]].float().detach()
        pc = PrefixCache(base, x, m, pos, layer) if prefix_cache and can_cache_prefix(base, x.shape[1]) else None
        if pc is not None:  # from here on, rows are their suffixes: the subject's last token is at 0
            y, m, pos_run = pc.labels(y), pc.suffix_mask, torch.zeros_like(pos)
        else:
            pos_run = pos
        max_norm = cfg.clamp_norm * h0.norm(dim=1)
        for step in range(cfg.steps):
            req_idx = active.nonzero()[:, 0]
            rows = active[owner].nonzero()[:, 0]
            remap = torch.full((n,), -1, dtype=torch.long, device=device)
            remap[req_idx] = torch.arange(len(req_idx), device=device)
            own = remap[owner[rows]]
            width = int(m[rows].sum(1).max())
            d = delta[owner[rows]]
            if pc is not None and pc.start is not None:  # δ added to the stored output of the edited block
                h = pc.forward(rows, d)
            else:
                with add_at_positions(mlp, d, pos_run[rows]):
                    h = (pc.forward(rows) if pc is not None
                         else base(input_ids=x[rows, :width], attention_mask=m[rows, :width]).last_hidden_state)
            h = h[:, :width]
            nll, kl = _batch_losses(h, lm_head, x[rows, :width], m[rows, :width], y[rows, :width], own,
                                    is_kl[rows], len(req_idx), kl_ref[req_idx])
            wd = cfg.weight_decay * delta[req_idx].norm(dim=1) ** 2 / h0[req_idx].norm(dim=1) ** 2
            loss = nll + cfg.kl_factor * kl + wd
            done = nll.detach() < cfg.stop_nll
            for j in req_idx[done].tolist():
                steps[j] = step + 1
            active[req_idx[done]] = False
            if not active.any():
                break
            keep = delta.detach().clone()
            opt.zero_grad()
            loss.sum().backward()
            opt.step()
            with torch.no_grad():
                delta.copy_(torch.where(active[:, None], delta, keep))  # stopped requests stay put
                norm = delta.norm(dim=1)
                scale = torch.where(norm > max_norm, max_norm / norm.clamp(min=1e-12), torch.ones_like(norm))
                delta.mul_(scale[:, None])
    logger.debug("v* batch of %d: %d steps at most, %d still above stop_nll", n, max(steps), int(active.sum()))
    return delta.detach().float(), h0, steps
