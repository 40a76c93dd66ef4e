"""Task vectors: τ = θ_ft − θ_pre, applied as θ + λ·τ; negation makes a model forget.

Forgetting by negation (Ilharco et al., "Editing models with task arithmetic"):
    θ_reinf = θ_target fine-tuned further on the forget set,
    θ_unl   = θ_target − λ·(θ_reinf − θ_target).
With a retain task vector (`retain_weight` β > 0; the default recipe), what is negated is what
the forget set teaches beyond what any of the model's data teaches:
    θ_retain = θ_target fine-tuned on the retain set, same settings and number of steps,
    τ        = (θ_reinf − θ_target) − β·(θ_retain − θ_target),   θ_unl = θ_target − λ·τ.
Fine-tuning on the forget set also raises what forget and retain answers share (their values,
their phrasing); τ_retain carries that part too, so subtracting it leaves the forget-specific
direction, and negation then costs retain data less.
λ is chosen by `select_lambda`: the largest forgetting that keeps retain utility ≥ `fraction`
(default 0.95) of the target's, measured on calibration retain rows; the recipe (`editing/run.py`) keeps
other people's retain rows apart and reports the chosen model's utility on them. Integer buffers
(position ids, counters) are never part of a task vector. LoRA adapters are negated or scaled through
peft's `add_weighted_adapter` (negative weights allowed) without merging: `scale_lora`.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch

from ..errors import UserError

logger = logging.getLogger(__name__)

CITATION = "Ilharco et al., Editing Models with Task Arithmetic, ICLR 2023"


def task_vector(pre: dict[str, torch.Tensor], ft: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """τ = θ_ft − θ_pre for every floating-point tensor (computed in fp32, returned in the
    checkpoint's dtype). Both state dicts must have the same floating-point keys and shapes."""
    tau = {}
    for name, b in ft.items():
        if not b.is_floating_point():
            continue  # integer buffers are not weights
        if name not in pre:
            raise UserError(f"task vector: {name} is in the fine-tuned checkpoint but not in the base one; "
                            "both must be the same architecture")
        a = pre[name]
        if a.shape != b.shape:
            raise UserError(f"task vector: {name} has shape {tuple(a.shape)} vs {tuple(b.shape)}; "
                            "both checkpoints must be the same architecture")
        tau[name] = (b.float() - a.float()).to(b.dtype)
    missing = [k for k, v in pre.items() if v.is_floating_point() and k not in ft]
    if missing:
        raise UserError(f"task vector: {len(missing)} weights of the base checkpoint are missing from the "
                        f"fine-tuned one (first: {missing[0]})")
    return tau


def apply(state: dict[str, torch.Tensor], tau: dict[str, torch.Tensor], lam: float) -> dict[str, torch.Tensor]:
    """θ + λ·τ (new tensors; `state` is untouched). λ < 0 negates the task."""
    out = dict(state)
    for name, t in tau.items():
        if name not in state:
            raise UserError(f"task vector weight {name} is not in the model")
        out[name] = (state[name].float() + lam * t.float()).to(state[name].dtype)
    return out


def negate(target: dict[str, torch.Tensor], reinforced: dict[str, torch.Tensor], lam: float):
    """θ_target − λ·(θ_reinf − θ_target)."""
    return apply(target, task_vector(target, reinforced), -lam)


def combine(tau: dict[str, torch.Tensor], other: dict[str, torch.Tensor], weight: float) -> dict[str, torch.Tensor]:
    """τ + weight·τ_other, key by key (both from the same base; computed in fp32)."""
    if tau.keys() != other.keys():
        raise UserError("task vectors to combine must come from the same architecture (their weights differ)")
    return {k: (t.float() + weight * other[k].float()).to(t.dtype) for k, t in tau.items()}


def save(tau: dict[str, torch.Tensor], path: str | Path, metadata: dict | None = None) -> Path:
    """Write τ as safetensors (atomically)."""
    from safetensors.torch import save_file

    from ..io import atomic_file

    with atomic_file(path) as tmp:
        save_file({k: v.contiguous() for k, v in tau.items()}, str(tmp),
                  metadata={k: str(v) for k, v in (metadata or {}).items()})
    return Path(path)


def load(path: str | Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not Path(path).exists():
        raise UserError(f"task vector file {path} does not exist")
    return load_file(str(path))


def select_lambda(rows: list[dict], target_utility: float, fraction: float = 0.95,
                  forget_key: str = "forget_perplexity", utility_key: str = "retain_probability") -> dict | None:
    """The sweep row with the most forgetting (largest `forget_key`; higher = more forgotten)
    among rows whose retain utility (`utility_key`, higher = better) is ≥ fraction·target_utility.
    None when no row keeps enough utility."""
    ok = [r for r in rows if r[utility_key] >= fraction * target_utility and math.isfinite(r[forget_key])]
    if not ok:
        return None
    return max(ok, key=lambda r: (r[forget_key], -abs(r["lambda"])))


def scale_lora(model, adapter: str, weight: float, new_name: str | None = None) -> str:
    """Add adapter `new_name` = weight × `adapter` (weight < 0 negates it) to a peft model and
    make it active, without merging. Returns the new adapter's name."""
    new_name = new_name or f"{adapter}_x{weight:g}".replace("-", "neg").replace(".", "p")
    if not hasattr(model, "add_weighted_adapter"):
        raise UserError("scale_lora needs a peft model with a LoRA adapter")
    model.add_weighted_adapter([adapter], [weight], new_name, combination_type="linear")
    model.set_adapter(new_name)
    return new_name


def _measurer(target: str, tau: dict[str, torch.Tensor], batch_size: int, prompt_template: str):
    """A function (λ, sets) -> {"lambda", "<set>_perplexity", "<set>_probability" for each of `sets`,
    "retain_inverse_perplexity" when there is a retain set}: θ_target − λ·τ measured by `quick_eval`
    (the target is loaded once; θ_target is kept apart and never modified)."""
    from ..data.encode import Encoder
    from ..evaluation.quick import quick_eval
    from ..models import load_model, load_tokenizer

    enc = Encoder(load_tokenizer(target), prompt_template)
    model = load_model(target, "float32")
    theta_t = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def measure(lam: float, sets: dict[str, list[dict]]) -> dict:
        model.load_state_dict(apply(theta_t, tau, -lam))
        s = quick_eval(model, enc, sets, batch_size)["summary"]
        row = {"lambda": lam, **{f"{k}_{m}": s[f"{k}_{m}"] for k in sets for m in ("perplexity", "probability")}}
        if "retain" in sets:
            row["retain_inverse_perplexity"] = 1.0 / s["retain_perplexity"]
        logger.info("λ=%g %s", lam, " ".join(f"{k} ppl {s[k + '_perplexity']:.3g}" for k in sets))
        return row

    return measure


def sweep(target: str, tau: dict[str, torch.Tensor], lambdas, forget_rows: list[dict], retain_rows: list[dict],
          fraction: float = 0.95, batch_size: int = 32, out_dir: str | Path | None = None,
          prompt_template: str = "Question: {question}\nAnswer:", utility: str = "probability",
          refine: int = 0, held_out: list[dict] | None = None) -> dict:
    """Evaluate θ_target − λ·τ for each λ (forget and retain perplexity and answer probability),
    choose λ with `select_lambda` on retain `utility` (probability, or perplexity through its
    inverse), and (when `out_dir`) write sweep.json, sweep.md and sweep.png there.
    refine: then bisect `refine` times between the chosen λ and the next larger λ of the grid when that
    one keeps too little utility (the rows measured are added to the sweep, in λ order), so the choice
    lands within (gap / 2^refine) of the utility limit instead of a grid step below it.
    The retain rows given here calibrate the choice. held_out: retain rows kept out of it, measured at λ 0 and
    at the chosen λ only ("evaluation": {"retain_rows", "target", "chosen", "ratio_to_target"}, with the forget
    numbers of the sweep; None without held-out rows or a choice).
    Returns {"rows", "chosen", "target", "fraction", "utility", "evaluation"}."""
    from .. import io

    measure = _measurer(target, tau, batch_size, prompt_template)
    sets = {"forget": forget_rows, "retain": retain_rows}
    rows = [measure(lam, sets) for lam in [0.0, *sorted({float(x) for x in lambdas} - {0.0})]]
    base = rows[0]
    key = {"probability": "retain_probability", "perplexity": "retain_inverse_perplexity"}[utility]
    chosen = select_lambda(rows[1:], base[key], fraction, utility_key=key)
    keeps = lambda r: r[key] >= fraction * base[key]  # noqa: E731  (select_lambda's utility rule)
    above = next((r for r in rows if chosen and r["lambda"] > chosen["lambda"]), None)
    if refine and above is not None and not keeps(above):  # bisect towards the utility limit
        lo, hi = chosen["lambda"], above["lambda"]
        for _ in range(refine):
            r = measure((lo + hi) / 2, sets)
            rows.append(r)
            lo, hi = (r["lambda"], hi) if keeps(r) else (lo, r["lambda"])
        rows.sort(key=lambda r: r["lambda"])
        chosen = select_lambda(rows[1:], base[key], fraction, utility_key=key)
    evaluation = None
    if chosen is not None and held_out:
        forget_of = lambda r: {k: r[k] for k in ("forget_perplexity", "forget_probability")}  # noqa: E731
        ev = {name: {**forget_of(r), **measure(r["lambda"], {"retain": held_out})}
              for name, r in (("target", base), ("chosen", chosen))}
        ratio = {k: ev["chosen"][k] / ev["target"][k] for k in ("forget_perplexity", "retain_perplexity")}
        evaluation = {"retain_rows": len(held_out), **ev, "ratio_to_target": ratio}
        logger.info("chosen λ=%g on held-out retain rows: retain %.3fx, forget %.3fx the target's perplexity",
                    chosen["lambda"], ratio["retain_perplexity"], ratio["forget_perplexity"])
    res = {"rows": rows, "chosen": chosen, "target": base, "fraction": fraction, "utility": utility,
           "evaluation": evaluation}
    if out_dir is not None:
        out = Path(out_dir)
        io.write_json(out / "sweep.json", res)
        lines = ["| λ | forget ppl | retain ppl | forget prob | retain prob |", "|---|---|---|---|---|"]
        lines += [f"| {r['lambda']:g} | {r['forget_perplexity']:.3f} | {r['retain_perplexity']:.3f} | "
                  f"{r['forget_probability']:.3f} | {r['retain_probability']:.3f} |" for r in rows]
        pick = f"chosen λ = {chosen['lambda']:g}" if chosen else "no λ keeps enough retain utility"
        rule = (f"retain probability ≥ {fraction:g} × target's {base['retain_probability']:.3f}" if utility == "probability"
                else f"retain perplexity ≤ target's {base['retain_perplexity']:.3f} / {fraction:g}")
        lines += ["", f"{pick} ({rule})"]
        if evaluation:
            lines += ["", f"On the {len(held_out)} retain rows that did not choose λ (whole people kept apart): "
                      f"retain perplexity {evaluation['chosen']['retain_perplexity']:.3f} against the target's "
                      f"{evaluation['target']['retain_perplexity']:.3f} ({ratio['retain_perplexity']:.3f}x); forget "
                      f"perplexity {ratio['forget_perplexity']:.3f}x the target's."]
        io.write_text(out / "sweep.md", "\n".join(lines) + "\n")
        _plot(rows, chosen, out / "sweep.png")
    return res


def _plot(rows, chosen, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lam = [r["lambda"] for r in rows]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(lam, [r["forget_perplexity"] for r in rows], "o-", label="forget perplexity")
    ax.plot(lam, [r["retain_perplexity"] for r in rows], "s-", label="retain perplexity")
    if chosen:
        ax.axvline(chosen["lambda"], color="grey", ls="--", label=f"chosen λ={chosen['lambda']:g}")
    ax.set_yscale("log")
    ax.set_xlabel("λ (negation scale)")
    ax.set_ylabel("perplexity")
    ax.legend(fontsize=8)
    fig.tight_layout()
    from ..io import atomic_file

    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
