"""Task metrics: accuracy, and SQuAD's token F1 / exact match.

The SQuAD normalisation follows the official v1.1 evaluation script (lowercase, drop
punctuation, drop the articles a/an/the, collapse whitespace), so our F1 is comparable with the
published numbers. One deliberate choice: when the prediction and a gold answer both normalise to
nothing, F1 is 1 (the v2.0 script's rule; v1.1 would divide 0 by 0 and report 0).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lowercase, strip punctuation, remove articles, collapse whitespace (in that order)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _f1(pred: str, gold: str) -> float:
    p, g = normalize_answer(pred).split(), normalize_answer(gold).split()
    if not p or not g:
        return float(p == g)
    same = sum((Counter(p) & Counter(g)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def _golds(golds: str | Sequence[str]) -> list[str]:
    golds = [golds] if isinstance(golds, str) else list(golds)
    if not golds:
        raise ValueError("at least one gold answer is needed")
    return golds


def squad_f1(pred: str, golds: str | Sequence[str]) -> float:
    """Token-overlap F1 of ``pred`` against the best-matching gold answer."""
    return max(_f1(pred, g) for g in _golds(golds))


def squad_em(pred: str, golds: str | Sequence[str]) -> float:
    """1.0 if ``pred`` equals some gold answer after normalisation, else 0.0."""
    p = normalize_answer(pred)
    return float(any(p == normalize_answer(g) for g in _golds(golds)))


def accuracy(preds: Sequence[int], labels: Sequence[int]) -> float:
    """Fraction of equal pairs; raises on length mismatch or empty input."""
    preds, labels = list(preds), list(labels)
    if len(preds) != len(labels):
        raise ValueError(f"{len(preds)} predictions for {len(labels)} labels")
    if not labels:
        raise ValueError("accuracy of an empty set is undefined")
    return sum(int(p) == int(y) for p, y in zip(preds, labels)) / len(labels)


def mean_squad(preds: Sequence[str], golds: Sequence[Sequence[str]]) -> dict[str, float]:
    """Mean F1 and EM over a set of predictions (each a fraction in [0, 1])."""
    if len(preds) != len(golds) or not preds:
        raise ValueError(f"{len(preds)} predictions for {len(golds)} gold lists")
    f1 = sum(squad_f1(p, g) for p, g in zip(preds, golds)) / len(preds)
    em = sum(squad_em(p, g) for p, g in zip(preds, golds)) / len(preds)
    return {"f1": f1, "em": em}
