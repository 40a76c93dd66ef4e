"""Compare evaluations side by side: a markdown table and a forget-quality vs model-utility plot."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..errors import UserError

logger = logging.getLogger(__name__)

# (summary key, column title, format); a column appears when any run has the key
COLUMNS = [("forget_quality", "forget quality ↑", "{:.3g}"), ("forget_nll_quality", "NLL KS p ↑", "{:.3g}"),
           ("model_utility", "model utility ↑", "{:.3f}"),
           ("mia_auc", "MIA AUC (→0.5)", "{:.3f}"), ("privleak", "privleak (→0)", "{:.1f}"),
           ("forget_extraction_strength", "forget ES ↓", "{:.3f}"),
           ("forget_exact_memorization", "forget EM ↓", "{:.3f}"), ("forget_perplexity", "forget ppl ↑", "{:.3g}"),
           ("retain_perplexity", "retain ppl ↓", "{:.3g}"), ("forget_rougeL_recall", "forget ROUGE-L ↓", "{:.3f}"),
           ("retain_rougeL_recall", "retain ROUGE-L ↑", "{:.3f}"), ("forget_truth_ratio", "forget TR", "{:.3f}"),
           ("knowmem_forget", "knowmem forget ↓", "{:.3f}"), ("knowmem_retain", "knowmem retain ↑", "{:.3f}"),
           ("text_perplexity", "text ppl ↓", "{:.3g}"), ("kl_forget", "KL forget (vs retrain) ↓", "{:.3g}")]


def load_runs(paths) -> list[tuple[str, dict]]:
    """(name, summary) per results.json or folder holding one; the name is the folder's name."""
    runs = []
    for p in paths:
        p = Path(p)
        f = p / "results.json" if p.is_dir() else p
        if not f.is_file():
            raise UserError(f"{p} is neither a results.json nor a folder holding one")
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise UserError(f"{f} is not valid JSON: {e.msg}") from e
        if not isinstance(data.get("summary"), dict):
            raise UserError(f"{f} has no summary (was the evaluation run?)")
        name = f.parent.name or str(f)
        if name in dict(runs):
            name = str(f.parent)
        runs.append((name, data["summary"]))
    return runs


def compare_table(runs: list[tuple[str, dict]]) -> str:
    """Markdown: one row per run, one column per metric any run has (– where a run lacks it)."""
    cols = [c for c in COLUMNS if any(isinstance(s.get(c[0]), (int, float)) for _, s in runs)]
    lines = ["| run | " + " | ".join(c[1] for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, s in runs:
        cells = [fmt.format(s[k]) if isinstance(s.get(k), (int, float)) else "–" for k, _, fmt in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tradeoff_plot(runs: list[tuple[str, dict]], path) -> Path:
    """Scatter of model utility (x) vs forget quality (y, log scale): up and right is better."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [(n, s["model_utility"], s["forget_quality"]) for n, s in runs
           if isinstance(s.get("model_utility"), (int, float)) and isinstance(s.get("forget_quality"), (int, float))]
    if not pts:
        raise UserError("no run has both forget_quality and model_utility (evaluate with --retain-model)")
    skipped = [n for n, _ in runs if n not in {p[0] for p in pts}]
    if skipped:
        logger.warning("not plotted (no forget_quality or model_utility): %s", ", ".join(skipped))
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for n, x, y in pts:
        y = max(y, 1e-30)
        ax.scatter(x, y, s=50)
        ax.annotate(n, (x, y), fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax.set_yscale("log")
    ax.set_xlabel("model utility (higher = more kept)")
    ax.set_ylabel("forget quality, KS p-value (higher = more forgotten)")
    ax.set_title("forgetting vs keeping")
    fig.tight_layout()
    from ..io import atomic_file

    try:
        with atomic_file(path) as tmp:
            fig.savefig(tmp, dpi=120)
    finally:
        plt.close(fig)
    return Path(path)
