"""Request streams: apply deletion requests one after another (MUSE's "sustainability").

`run_stream(recipe, requests)` runs `llm_forget.unlearn` once per request of a request file,
each starting from the previous step's model, so the ledger chain continues across the
stream (every step's ledger.jsonl holds the whole history). After each step it evaluates:

- forget metrics on this request's rows (from the step's own evaluation),
- forget metrics on every earlier request's rows, one by one and as one union,
- utility on the retain set (and MIA AUC, forget vs holdout), from the step's evaluation.

Step 0 is the input model before any request. Output folder: step_NN_ID/ (a normal run
folder per request), stream.json (every number), stream.md (the table), plots/stream.png
(utility and forgetting over the stream).
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

logger = logging.getLogger(__name__)

# (summary key, column title, which direction is better)
COLUMNS = [("forget_probability", "forget p (this request)", "lower = forgotten"),
           ("earlier_probability", "forget p (earlier requests)", "lower = stays forgotten"),
           ("retain_probability", "retain p (utility)", "higher = utility kept"),
           ("retain_perplexity", "retain ppl", "lower = utility kept"),
           ("mia_auc", "MIA AUC", "0.5 = ideal"),
           ("forget_quality", "forget quality", "higher = closer to retraining")]


def _eval_sets(model_dir, cfg, sets: dict[str, list[dict]]) -> dict:
    """quick_eval of the model in `model_dir` on named row sets -> {name: [per-item dicts]}."""
    import torch

    from .data.encode import Encoder
    from .evaluation.quick import quick_eval
    from .models import load_model, load_tokenizer

    sets = {k: v for k, v in sets.items() if v}
    if not sets:
        return {}
    tok = load_tokenizer(str(model_dir), cfg.trust_remote_code)
    model = load_model(str(model_dir), cfg.dtype, cfg.trust_remote_code, cfg.allow_pickle)
    enc = Encoder(tok, cfg.prompt_template, cfg.chat_template, cfg.max_length, cfg.overlong)
    with torch.no_grad():
        return quick_eval(model, enc, sets, cfg.per_device_eval_batch_size)["per_item"]


def table(steps: list[dict]) -> str:
    """Markdown table of a stream, one row per step."""
    cols = [c for c in COLUMNS if any(isinstance(s.get(c[0]), (int, float)) for s in steps)]
    lines = ["| step | request | kind | rows | " + " | ".join(c[1] for c in cols) + " |",
             "|" + "---|" * (4 + len(cols))]
    for s in steps:
        cells = []
        for k, _, _ in cols:
            v = s.get(k)
            cells.append(f"{v:.4g}" if isinstance(v, (int, float)) and math.isfinite(v) else "–")
        lines.append(f"| {s['step']} | {s.get('request_id') or '(input model)'} | {s.get('kind') or '–'} | "
                     f"{s.get('rows', '–')} | " + " | ".join(cells) + " |")
    lines += ["", "Directions: " + "; ".join(f"{t}: {d}" for k, t, d in cols) + "."]
    return "\n".join(lines)


def plot(steps: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [s["step"] for s in steps]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label, style in (("retain_probability", "retain answer probability (utility)", "o-"),
                              ("forget_probability", "forget p, this request", "s--"),
                              ("earlier_probability", "forget p, earlier requests", "^:")):
        pts = [(a, s[key]) for a, s in zip(x, steps) if isinstance(s.get(key), (int, float))]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=label)
    if isinstance(steps[0].get("all_requests_probability"), (int, float)):
        ax.plot([0], [steps[0]["all_requests_probability"]], "k*", markersize=10, label="forget p, input model")
    ax.set_xlabel("requests applied")
    ax.set_ylabel("mean answer probability")
    ax.set_xticks(x)
    ax.set_ylim(0, 1.02)
    ax.set_title("Utility and forgetting over the request stream")
    ax.legend(fontsize=8)
    fig.tight_layout()
    from .io import atomic_file

    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def run_stream(recipe: str | None, requests: str, output_dir: str | None = None, overwrite: bool = False,
               **overrides) -> dict:
    """Apply every request of the file `requests` in order; see the module docstring.
    Returns {"output_dir", "steps": [...], "final_model"}."""
    import shutil

    from . import io
    from .api import unlearn
    from .config import parse_config
    from .data.readers import read_rows
    from .errors import UserError
    from .evaluation.quick import summarize
    from .inputs import check_sets, given_keys, is_unset, log_notes, refuse_mixed
    from .zoo import resolve_model_path
    from .requests import load_requests

    reqs = load_requests(requests)
    base = parse_config(recipe, {**overrides, **({"output_dir": output_dir} if output_dir else {})})
    root = Path(base.output_dir)
    if root.exists() and any(root.iterdir()) and not overwrite:
        raise UserError(f"output_dir {root} is not empty; pass --overwrite to replace it")
    # every input is read and checked before the output folder is touched (llm_forget/inputs.py's rules,
    # as each step's `unlearn` applies them: the stream's own table must not report on other sets)
    req_rows = [r.resolve() for r in reqs]
    retain = read_rows(base.retain) if not is_unset(base.retain) else []
    forget_all = [r for rows in req_rows for r in rows]
    given = given_keys({}, overrides)
    holdout, own, notes = check_sets(base, given, forget_all, retain)
    holdout = holdout or []
    base.request = str(requests)  # the forget rows come from the requests, as in each step
    refuse_mixed(base, given, *own)
    model = resolve_model_path(base.model)
    log_notes(notes)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    if base.lora_r > 0 and not base.merge:
        logger.info("stream: LoRA adapters are merged after each step so the next request starts from a full model")
        overrides["merge"] = True

    per0 = _eval_sets(model, base, {"retain": retain, "holdout": holdout,
                                    **{f"request_{j}": rows for j, rows in enumerate(req_rows)}})
    steps = [_step_row(0, None, per0, {}, summarize)]
    for i, (req, rows) in enumerate(zip(reqs, req_rows)):
        step_dir = root / f"step_{i + 1:02d}_{re.sub(r'[^A-Za-z0-9._-]', '_', req.id)[:48]}"
        logger.info("stream: request %d/%d (%s, %s, %d rows)", i + 1, len(reqs), req.id, req.kind, len(rows))
        res = unlearn(recipe, **{**overrides, "model": str(model), "request": f"{requests}#{i}",
                                 "output_dir": str(step_dir), "overwrite": True})
        earlier = _eval_sets(res.model_dir, base, {f"request_{j}": req_rows[j] for j in range(i)})
        steps.append(_step_row(i + 1, req, earlier, res.metrics, summarize, len(rows)))
        model = res.model_dir
    out = {"output_dir": str(root), "requests": str(requests), "final_model": str(model), "steps": steps,
           "columns": {k: d for k, _, d in COLUMNS}}
    io.write_json(root / "stream.json", out)
    io.write_text(root / "stream.md", table(steps) + "\n")
    plot(steps, root / "plots" / "stream.png")
    logger.info("stream: %d requests applied; table in %s", len(reqs), root / "stream.md")
    return out


def _step_row(step: int, req, per_item: dict, metrics: dict, summarize, rows: int | None = None) -> dict:
    """One table row: the step's own evaluation plus forget metrics on earlier request sets."""
    row = {"step": step, "request_id": req.id if req else None, "kind": req.kind if req else None}
    if rows is not None:
        row["rows"] = rows
    for k in ("forget_probability", "forget_perplexity", "retain_probability", "retain_perplexity", "mia_auc",
              "forget_quality", "model_utility", "privleak"):
        if k in metrics:
            row[k] = metrics[k]
    if step == 0:  # the input model: its numbers on the retain set and on every request's set
        for k in ("retain", "holdout"):
            if k in per_item:
                s = summarize(per_item[k])
                row[f"{k}_probability"], row[f"{k}_perplexity"] = s["probability"], s["perplexity"]
        reqs = [v for k, v in per_item.items() if k.startswith("request_")]
        if reqs:
            s = summarize([x for v in reqs for x in v])
            row["all_requests_probability"] = s["probability"]
    row["per_request"] = {k: {m: v for m, v in summarize(items).items() if m != "n"}
                          for k, items in per_item.items() if k.startswith("request_")}
    earlier = [x for k, v in per_item.items() if k.startswith("request_") for x in v]
    if earlier and step > 0:
        s = summarize(earlier)
        row["earlier_probability"], row["earlier_perplexity"] = s["probability"], s["perplexity"]
    return row
