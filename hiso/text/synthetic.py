"""A generated sentiment-like task that a tiny, randomly initialised OPT can learn on a CPU.

Why it exists: the smoke tier must show the whole LLM path (template -> candidates -> scoring ->
ZO training) actually learns something in minutes without any download. Each sentence is a
handful of neutral filler words with exactly one polarity keyword inserted at a random position;
the label is 1 when the keyword is positive. The keyword sets are disjoint from the SST-2
verbalisers (" terrible" / " great"), so the model must learn the mapping rather than copy a word.

Rows use SST-2's columns (sentence, label, idx), so the synthetic task reuses SST-2's template
and goes through exactly the same loading and scoring code as the real task.
"""

from __future__ import annotations

import numpy as np

FILLER_WORDS: tuple[str, ...] = (
    "the", "movie", "film", "plot", "story", "actors", "cast", "scene", "music", "ending",
    "script", "and", "very", "quite", "really", "was", "is", "this", "with", "of",
)
POSITIVE_WORDS: tuple[str, ...] = ("good", "wonderful", "superb")
NEGATIVE_WORDS: tuple[str, ...] = ("bad", "awful", "boring")

#: fixed generation seeds per split: the data set is a constant, like a hub data set; the run
#: seed only chooses which examples land in train/dev/eval (see hiso.text.data.make_splits)
SPLIT_SEEDS: dict[str, int] = {"train": 1_000_003, "validation": 2_000_003}
SPLIT_SIZES: dict[str, int] = {"train": 2000, "validation": 500}


def synthetic_rows(n: int, seed: int, min_words: int = 4, max_words: int = 8) -> list[dict]:
    """``n`` rows ``{"sentence", "label", "idx"}`` with labels drawn with p = 1/2.

    Sentence = ``k`` filler words (k uniform in [min_words, max_words]) with one keyword
    inserted at a uniformly random position. Deterministic in ``seed``.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = int(rng.integers(2))
        k = int(rng.integers(min_words, max_words + 1))
        words = [FILLER_WORDS[j] for j in rng.integers(len(FILLER_WORDS), size=k)]
        pool = POSITIVE_WORDS if label == 1 else NEGATIVE_WORDS
        words.insert(int(rng.integers(k + 1)), pool[int(rng.integers(len(pool)))])
        rows.append({"sentence": " ".join(words), "label": label, "idx": i})
    return rows


def synthetic_split(split: str) -> list[dict]:
    """The fixed rows of one split (``train`` or ``validation``)."""
    if split not in SPLIT_SEEDS:
        raise KeyError(f"synthetic task has splits {sorted(SPLIT_SEEDS)}, not {split!r}")
    return synthetic_rows(SPLIT_SIZES[split], SPLIT_SEEDS[split])


def keyword_label(sentence: str) -> int | None:
    """The label the generator's rule assigns (1 positive, 0 negative, None if no keyword)."""
    words = set(sentence.split())
    if words & set(POSITIVE_WORDS):
        return 1
    if words & set(NEGATIVE_WORDS):
        return 0
    return None
