"""Retain rows paired with each forget row by similarity: the rows an ascent on that forget row moves most.

A retain term protects the rows it is computed on. Drawn at random (the default seeded stream, trainer.py),
most of them share little with the forget rows, while an ascent's damage falls on the retain rows that look
like them: on TOFU forget01 (tiny model, kl as shipped) the rise of a retain row's answer NLL has Spearman
0.24 with its TF-IDF similarity to the nearest forget row, and the most similar quarter of the 400 evaluated
retain rows loses 47 % of the answer probability lost, the least similar 10 % (BENCHMARKS.md, "Retain rows
paired by similarity"). `retain_pairing: similar` pairs forget row i with

    s_ij = cos(tfidf(f_i), tfidf(r_j))      TF-IDF of question + answer (or text), fitted on forget and retain rows
    ranked_i = the `depth` retain rows j with the largest s_ij, in that order (ties by index)

and in epoch e item i takes ranked_i[(e·k + t) mod len(ranked_i)], t < k = retain_per_forget: its nearest
rows first, the next ones each epoch. Deterministic, so every rank and a resumed run draw the same rows.

Measured (same section): against the stream, on the four zoo builds of the built-in benchmark utility falls on
three and forget quality on all four, and on TOFU forget01 it keeps 94.2 % of the retain answer probability against
94.6 %: the retain term on the nearest rows (other people with the same answer) holds up the tokens the
ascent lowers, and the damage moves to the rows it no longer sees; on the second domain it forgets less too. Opt-in;
the default stays `stream`.
"""

from __future__ import annotations

import numpy as np


def qa_text(row: dict) -> str:
    """What a row says: question and answer, else its text."""
    if isinstance(row.get("question"), str):
        return f"{row['question']} {row.get('answer') or ''}"
    return str(row.get("text") or "")


def similar_retain(forget_rows: list[dict], retain_rows: list[dict], depth: int = 256) -> list[list[int]]:
    """Per forget row, the indices of the `depth` retain rows most similar to it by TF-IDF cosine (module
    docstring), most similar first, ties by index."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    if not forget_rows or not retain_rows:
        return [[] for _ in forget_rows]
    texts = [qa_text(r) for r in forget_rows + retain_rows]
    try:
        x = TfidfVectorizer().fit_transform(texts)
    except ValueError:  # no word in any row (e.g. all empty): no similarity to rank by
        return [list(range(min(depth, len(retain_rows)))) for _ in forget_rows]
    f, r = x[:len(forget_rows)], x[len(forget_rows):]
    out = []
    for i in range(len(forget_rows)):
        s = (r @ f[i].T).toarray().ravel()  # rows are L2-normalised: the dot product is the cosine
        order = np.lexsort((np.arange(len(s)), -s))  # by similarity descending, then index
        out.append(order[:depth].tolist())
    return out
