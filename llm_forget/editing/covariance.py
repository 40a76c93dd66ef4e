"""Second moment C = E[k kᵀ] of the keys (inputs of the MLP output projection) over a text corpus.

ROME, MEMIT and AlphaEdit all need C (uncentred, over real text) to keep edits from disturbing
other inputs. It is computed in float64 from `n_tokens` corpus tokens (padding never counts),
one forward pass for all requested layers, stopped after the deepest one, and cached on disk
under `cache_dir()/stats/` keyed by the model weights hash, the layer and projection path, the
dtype, and a hash of the exact token sequences fed (so the corpus, n_tokens, seq_len, the
tokenizer and whether a bos token leads each sequence all change the key).
"""

from __future__ import annotations

import functools
import hashlib
import logging
from pathlib import Path

import torch

from ..data.encode import pad
from ..errors import UserError
from .hooks import capture_inputs

logger = logging.getLogger(__name__)


def second_moment_update(acc: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """acc + Σ_t k_t k_tᵀ for keys (T, d), accumulated in acc's dtype (float64)."""
    k = keys.to(acc.dtype)
    return acc.addmm_(k.T, k)


def weights_hash(model) -> str:
    """sha256 over the model's parameter names and bytes (as they are in memory now)."""
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        t = p.detach().cpu().contiguous()
        h.update(str(t.dtype).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=4)
def corpus_text(corpus: str) -> tuple[str, str]:
    """(text, sha256[:16]) of a .txt file, or of a data spec's text/question+answer rows (read once
    per process: `edit` reads it before loading the model, so a missing corpus stops it first)."""
    p = Path(corpus).expanduser()
    if p.is_file() and p.suffix.lower() in (".txt", ".text", ".md", ".raw"):
        text = p.read_text(encoding="utf-8", errors="replace")
    else:
        from ..data.readers import read_rows

        rows = read_rows(corpus)
        text = "\n".join(r["text"] if "text" in r else f"{r['question']} {r['answer']}" for r in rows)
    if not text.strip():
        raise UserError(f"corpus {corpus} holds no text")
    return text, hashlib.sha256(text.encode()).hexdigest()[:16]


def _path(model_id: str, layer: int, arch, inputs_hash: str, dtype: str) -> Path:
    from ..zoo import cache_dir

    where = hashlib.sha256(f"{arch.layers}|{arch.mlp_out}|{arch.conv1d}".encode()).hexdigest()[:8]
    return cache_dir() / "stats" / model_id / f"v3-layer{layer}-{where}-inputs{inputs_hash}-{dtype}.safetensors"


def sequences(tokenizer, text: str, n_tokens: int, seq_len: int, corpus: str = "corpus"):
    """The first `n_tokens` tokens of `text` cut into sequences of `seq_len` tokens in all, led by
    the bos token when the tokenizer adds one itself. Returns (chunks, bos id or None, sha256[:16]
    of exactly these inputs)."""
    head = text[: n_tokens * 16]  # tokenise only what is needed (a token is rarely > 16 characters)
    ids = tokenizer(head, add_special_tokens=False)["input_ids"]
    if len(ids) < n_tokens and len(head) < len(text):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) < n_tokens:
        logger.warning("corpus %s has %d tokens, fewer than n_tokens=%d; using all", corpus, len(ids), n_tokens)
    ids = torch.tensor(ids[:n_tokens])
    bos = tokenizer.bos_token_id
    if bos is not None and list(tokenizer("a")["input_ids"][:1]) != [bos]:
        bos = None  # start sequences as the tokenizer does: with bos only if it adds one itself
    chunks = list(ids.split(seq_len - (bos is not None)))  # with the bos token, seq_len in all
    h = hashlib.sha256(f"bos={bos}|seq_len={seq_len}|".encode())
    h.update(ids.to(torch.int64).numpy().tobytes())
    return chunks, bos, h.hexdigest()[:16]


def second_moments(model, tokenizer, layers, corpus: str, n_tokens: int = 20000, seq_len: int = 256,
                   batch_size: int = 4, arch=None, cache: bool = True, dtype: str = "float64") -> dict[int, torch.Tensor]:
    """C_l = E[k kᵀ] (d_in × d_in, float64) for each layer l, from the first `n_tokens` tokens of
    `corpus` cut into `seq_len`-token sequences (led by the bos token when the tokenizer adds one; its key is not counted). Cached on disk (see module docstring)."""
    from safetensors.torch import load_file, save_file
    from tqdm.auto import tqdm

    from ..models import arch_for, get_mlp_out

    arch = arch or arch_for(model)
    layers = sorted(set(int(x) for x in layers))
    text, _ = corpus_text(corpus)
    mid = weights_hash(model)
    chunks, bos, ihash = sequences(tokenizer, text, n_tokens, seq_len, corpus)
    out, todo = {}, []
    for layer in layers:
        p = _path(mid, layer, arch, ihash, dtype)
        if cache and p.exists():
            out[layer] = load_file(str(p))["C"]
        else:
            todo.append(layer)
    if not todo:
        return out
    modules = {layer: get_mlp_out(model, layer, arch) for layer in todo}
    device = next(model.parameters()).device
    acc = {layer: None for layer in todo}
    count = 0
    model.eval()
    with torch.no_grad():
        for s in tqdm(range(0, len(chunks), batch_size), desc="covariance", leave=False):
            batch = chunks[s:s + batch_size]
            b = pad([{"input_ids": c.tolist(), "labels": c.tolist()} for c in batch], tokenizer.pad_token_id)
            x, mask = b["input_ids"], b["attention_mask"]
            if bos is not None:  # a sequence start as the model saw in training
                x = torch.cat([torch.full((len(batch), 1), bos), x], 1)
                mask = torch.cat([torch.ones(len(batch), 1, dtype=torch.long), mask], 1)
            with capture_inputs(modules, stop_after=max(todo)) as got:
                model(input_ids=x.to(device), attention_mask=mask.to(device))
            m = mask.bool().to(device)
            if bos is not None:
                m[:, 0] = False  # the sequence-start token is not text (and its key is an outlier)
            for layer in todo:
                k = got[layer][m].to("cpu")
                if acc[layer] is None:
                    acc[layer] = torch.zeros(k.shape[-1], k.shape[-1], dtype=torch.float64)
                second_moment_update(acc[layer], k)
            count += int(m.sum())
    for layer in todo:
        C = acc[layer] / count
        if not torch.isfinite(C).all():
            raise RuntimeError(f"non-finite key statistics at layer {layer}; load the model in float32")
        out[layer] = C
        if cache:
            from ..io import atomic_file

            with atomic_file(_path(mid, layer, arch, ihash, dtype)) as tmp:
                save_file({"C": C.contiguous()}, str(tmp), metadata={"tokens": str(count), "corpus": str(corpus)})
    logger.info("key second moments for layers %s from %d tokens", todo, count)
    return out
