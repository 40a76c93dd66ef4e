"""Keys k* and values v* for locate-then-edit (shared by ROME, MEMIT and AlphaEdit).

- Context prefixes: short texts sampled from the model itself (seeded), so that a key does not
  depend on the prompt being at the start of a text. Template: "{prefix}. {prompt}".
- Key k*_l: the input of layer l's MLP output projection at the subject's last token,
  averaged over the prefixes (the bare prompt included).
- Value: a vector δ added to that projection's output at the subject's last token (the same as
  adding it to the residual stream there), optimised with Adam so that the model predicts
  `target_new`:   L(δ) = mean_prompts NLL(target_new | prefix + prompt)
                        + kl_factor · KL(p_δ ‖ p_0) on "{subject} is a"
                        + weight_decay · ‖δ‖² / ‖h_0‖²,
  with ‖δ‖ clamped to clamp_norm · ‖h_0‖ (h_0: the unedited output being corrected: the MLP
  output for ROME, the residual stream for MEMIT/AlphaEdit). Lower L is better.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..data.encode import pad
from ..kl import kl_rows

from .hooks import add_at_positions, capture_inputs, capture_outputs, frozen
from .requests import EditRequest

logger = logging.getLogger(__name__)
STARTS = ["The", "Therefore", "Because", "I", "You"]


@dataclass
class ValueConfig:
    steps: int = 25
    lr: float = 0.5
    kl_factor: float = 0.0625
    weight_decay: float = 1e-3
    clamp_norm: float = 4.0
    stop_nll: float = 0.05
    n_prefixes: int = 5  # context prefixes used for v* (the bare prompt is always added)


def context_prefixes(model, tokenizer, n: int = 20, length: int = 10, seed: int = 0) -> list[str]:
    """`n` short texts sampled from the model (top-k 5, seeded), prefixed by "" (the bare prompt)."""
    if n <= 0:
        return [""]
    model.eval()
    device = next(model.parameters()).device
    starts = [STARTS[i % len(STARTS)] for i in range(n)]
    enc = tokenizer(starts, return_tensors="pt", padding=True, padding_side="left")  # the tokenizer is not changed
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        out = model.generate(input_ids=enc["input_ids"].to(device), attention_mask=enc["attention_mask"].to(device),
                             do_sample=True, top_k=5, max_new_tokens=length, pad_token_id=tokenizer.pad_token_id)
    texts = tokenizer.batch_decode(out, skip_special_tokens=True)
    clean = [" ".join(t.replace("{", " ").replace("}", " ").split()) for t in texts]
    return [""] + [c + "." for c in clean]


def template(prefix: str, text: str) -> str:
    return f"{prefix} {text}" if prefix else text


def encode(tokenizer, texts: list[str], subject_ends: list[int], targets: list[str] | None = None):
    """Tokenise texts (optionally followed by " " + target); return input_ids, attention_mask
    (right padded), the position of the last token that starts before each subject end, and
    target label positions (-100 elsewhere) when targets are given."""
    items = []
    for i, text in enumerate(texts):
        enc = tokenizer(text, return_offsets_mapping=True)
        ids, offs = list(enc["input_ids"]), enc["offset_mapping"]
        pos = max(j for j, (s, e) in enumerate(offs) if e > s and s < subject_ends[i])
        labels = [-100] * len(ids)
        if targets is not None and targets[i] is not None:
            t = list(tokenizer(" " + targets[i].strip(), add_special_tokens=False)["input_ids"])
            ids, labels = ids + t, labels + t
        items.append((ids, labels, pos))
    b = pad([{"input_ids": ids, "labels": labels} for ids, labels, _ in items],
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
    return b["input_ids"], b["attention_mask"], torch.tensor([p for *_, p in items]), b["labels"]


def subject_end(prompt: str, subject: str) -> int:
    return prompt.index(subject) + len(subject)


@torch.no_grad()
def compute_keys(model, tokenizer, requests: list[EditRequest], layers: list[int], prefixes: list[str],
                 arch, batch_size: int = 32) -> dict[int, torch.Tensor]:
    """k*_l for each request (N, d_in), float32, averaged over `prefixes`; the forward pass stops
    after the deepest requested layer."""
    from ..models import get_mlp_out

    model.eval()
    texts, ends, owner = [], [], []
    for r_i, r in enumerate(requests):
        cut = r.prompt[:subject_end(r.prompt, r.subject)]  # causal: later text cannot change the key
        for p in prefixes:
            t = template(p, cut)
            texts.append(t)
            ends.append(len(t))
            owner.append(r_i)
    modules = {layer: get_mlp_out(model, layer, arch) for layer in layers}
    device = next(model.parameters()).device
    keys = {layer: [] for layer in layers}
    for s in range(0, len(texts), batch_size):
        x, m, pos, _ = encode(tokenizer, texts[s:s + batch_size], ends[s:s + batch_size])
        with capture_inputs(modules, stop_after=max(layers)) as got:
            model(input_ids=x.to(device), attention_mask=m.to(device))
        rows = torch.arange(len(pos))
        for layer in layers:
            keys[layer].append(got[layer][rows, pos.to(device)].float().cpu())
    owner_t = torch.tensor(owner)
    out = {}
    for layer in layers:
        k = torch.cat(keys[layer])
        out[layer] = torch.stack([k[owner_t == i].mean(0) for i in range(len(requests))])
    return out


def _target_logits(model, x, m, y):
    """Logits only at the positions that predict a label (saves the vocabulary projection)."""
    base = model.base_model if hasattr(model, "base_model") else model
    h = base(input_ids=x, attention_mask=m).last_hidden_state
    sel = y[:, 1:] != -100
    hs = h[:, :-1][sel]
    return model.get_output_embeddings()(hs), y[:, 1:][sel], sel


def compute_value_delta(model, tokenizer, request: EditRequest, layer: int, prefixes: list[str], arch,
                        cfg: ValueConfig, h0_module: str = "mlp") -> tuple[torch.Tensor, torch.Tensor]:
    """Optimise δ (d_out,) for one request at `layer` (see module docstring). Returns (δ, h_0):
    h_0 = the unedited output (MLP output if h0_module == "mlp", else the block's residual output)
    at the subject's last token of the bare prompt. Model weights are not changed."""
    from ..models import get_layers, get_mlp_out

    device = next(model.parameters()).device
    mlp = get_mlp_out(model, layer, arch)
    block = get_layers(model, arch)[layer]
    prompts = [template(p, request.prompt) for p in prefixes[: cfg.n_prefixes + 1]]
    kl_prompt = f"{request.subject} is a"
    texts = prompts + [kl_prompt]
    ends = [len(t) - len(request.prompt) + subject_end(request.prompt, request.subject) for t in prompts]
    ends.append(len(request.subject))
    x, m, pos, y = encode(tokenizer, texts, ends, [request.target_new] * len(prompts) + [None])
    kl_last = int(m[-1].sum()) - 1
    x, m, pos, y = x.to(device), m.to(device), pos.to(device), y.to(device)
    n_rw = len(prompts)
    lm_head = model.get_output_embeddings()
    base = model.base_model if hasattr(model, "base_model") else model

    delta = torch.zeros(mlp.out_features if hasattr(mlp, "out_features") else mlp.nf, device=device,
                        requires_grad=True)
    opt = torch.optim.Adam([delta], lr=cfg.lr)
    model.eval()
    with frozen(model):
        with torch.no_grad(), capture_outputs({"mlp": mlp, "block": block}) as got:
            h = base(input_ids=x, attention_mask=m).last_hidden_state
            kl_ref = F.log_softmax(lm_head(h[-1, kl_last]).float(), -1)
        h0 = got[h0_module][0, pos[0]].float().detach()
        max_norm = cfg.clamp_norm * h0.norm()
        for step in range(cfg.steps):
            with add_at_positions(mlp, delta.expand(len(texts), -1), pos):
                h = base(input_ids=x, attention_mask=m).last_hidden_state
            sel = y[:n_rw, 1:] != -100
            logits = lm_head(h[:n_rw, :-1][sel]).float()
            nll_tok = F.cross_entropy(logits, y[:n_rw, 1:][sel], reduction="none")
            per_prompt = torch.zeros(n_rw, device=device).index_add(0, sel.nonzero()[:, 0], nll_tok)
            nll = (per_prompt / sel.sum(1)).mean()
            kl = kl_rows(lm_head(h[-1, kl_last]), kl_ref).sum()  # KL(p_δ ‖ p_0)
            wd = cfg.weight_decay * delta.norm() ** 2 / h0.norm() ** 2
            loss = nll + cfg.kl_factor * kl + wd
            if nll.item() < cfg.stop_nll:
                break
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                if delta.norm() > max_norm:
                    delta.mul_(max_norm / delta.norm())
    logger.debug("v*: %d steps, nll %.3f, |δ|/|h0| %.2f", step + 1, nll.item(), (delta.norm() / h0.norm()).item())
    return delta.detach().float(), h0
