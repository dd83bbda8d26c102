"""A generated natural-language sentiment task for pretrained models, built offline.

Why it exists: the pretrained tier needs a classification task in real English that a
pretrained model can be fine-tuned on without any download. Each row is a short movie-review
sentence written from word lists whose polarity is known, so every label is right by
construction:

* one polarity adjective carries the label ("The plot was wonderful." -> positive);
* "not" before it flips the label ("The ending was not dull." -> positive);
* "X was A, but overall it was B." takes the label of B, the clause after "but overall";
* "The S1 was A, and the S2 was B." uses two adjectives of the same polarity.

**Held-out vocabulary**: the eval split (``validation``) is written from polarity adjectives and
subjects that never occur in the train split (from which train and dev are drawn), so a model
that only memorised which words came with which label during fine-tuning cannot pass it; it has
to map unseen words to their sentiment, which is what pretraining brings. Intensifiers ("very",
"quite" ...) and the sentence frames are shared: they carry no label.

Rows use SST-2's columns (sentence, label, idx), so the task reuses SST-2's template
("<sentence> It was") and verbalisers (" terrible" / " great") and goes through exactly the same
loading and scoring code as the hub task.
"""

from __future__ import annotations

import numpy as np

#: polarity adjectives, label 1 (positive) and 0 (negative), for the train split ...
POSITIVE_TRAIN: tuple[str, ...] = (
    "wonderful", "brilliant", "delightful", "superb", "charming", "moving", "gripping",
    "excellent", "beautiful", "clever", "engaging", "fantastic", "hilarious", "memorable",
    "stunning", "touching", "refreshing", "powerful", "enjoyable", "inspiring")
NEGATIVE_TRAIN: tuple[str, ...] = (
    "boring", "dull", "awful", "tedious", "clumsy", "bland", "horrible", "annoying",
    "predictable", "lifeless", "forgettable", "painful", "confusing", "weak", "shallow", "messy",
    "pointless", "disappointing", "lazy", "silly")
#: ... and the held-out ones of the eval split (disjoint from the train lists)
POSITIVE_EVAL: tuple[str, ...] = (
    "magnificent", "captivating", "heartfelt", "splendid", "witty", "dazzling", "marvelous",
    "exhilarating", "uplifting", "masterful")
NEGATIVE_EVAL: tuple[str, ...] = (
    "dreadful", "insipid", "tiresome", "wooden", "incoherent", "atrocious", "lackluster",
    "unbearable", "mediocre", "sloppy")

SUBJECTS_TRAIN: tuple[str, ...] = (
    "film", "movie", "plot", "story", "acting", "cast", "script", "dialogue", "soundtrack",
    "ending", "pacing", "screenplay")
SUBJECTS_EVAL: tuple[str, ...] = (
    "cinematography", "direction", "lead performance", "premise", "editing", "finale")

#: neutral intensifiers, shared by every split ("" = none)
INTENSIFIERS: tuple[str, ...] = ("", "", "very ", "truly ", "rather ", "quite ", "really ",
                                 "genuinely ")
#: those that read naturally after "not" ("not rather dull" does not; "not quite" hedges)
NEGATED_INTENSIFIERS: tuple[str, ...] = ("", "", "very ", "really ", "at all ")

VOCABULARY = {
    "train": (POSITIVE_TRAIN, NEGATIVE_TRAIN, SUBJECTS_TRAIN),
    "validation": (POSITIVE_EVAL, NEGATIVE_EVAL, SUBJECTS_EVAL),
}
#: fixed generation seeds and sizes: the data set is a constant, like a hub data set; the
#: task's data_seed only chooses which rows land in train / dev / eval (hiso.text.data)
SPLIT_SEEDS: dict[str, int] = {"train": 3_000_017, "validation": 4_000_037}
SPLIT_SIZES: dict[str, int] = {"train": 2000, "validation": 600}
#: sentence kinds and their probabilities
KINDS: tuple[tuple[str, float], ...] = (("plain", 0.45), ("negated", 0.2), ("contrast", 0.2),
                                        ("pair", 0.15))


def review(rng: np.random.Generator, positive: tuple[str, ...], negative: tuple[str, ...],
           subjects: tuple[str, ...]) -> tuple[str, int, str]:
    """One (sentence, label, kind) from the given word lists."""

    def pick(words):
        return words[int(rng.integers(len(words)))]

    label = int(rng.integers(2))
    polar = {1: positive, 0: negative}
    kind = KINDS[int(rng.choice(len(KINDS), p=[p for _, p in KINDS]))][0]
    subj, how = pick(subjects), pick(INTENSIFIERS)
    if kind == "plain":
        text = f"The {subj} was {how}{pick(polar[label])}."
    elif kind == "negated":
        text = f"The {subj} was not {pick(NEGATED_INTENSIFIERS)}{pick(polar[1 - label])}."
    elif kind == "contrast":
        text = (f"The {subj} was {pick(polar[1 - label])}, but overall it was "
                f"{how}{pick(polar[label])}.")
    else:
        other = pick([s for s in subjects if s != subj])
        text = f"The {subj} was {how}{pick(polar[label])}, and the {other} was {pick(polar[label])}."
    return text, label, kind


def review_rows(n: int, seed: int, split: str) -> list[dict]:
    """``n`` rows ``{"sentence", "label", "idx"}`` from ``split``'s vocabulary; deterministic."""
    rng = np.random.default_rng(seed)
    words = VOCABULARY[split]
    return [{"sentence": s, "label": y, "idx": i}
            for i, (s, y, _) in enumerate(review(rng, *words) for _ in range(n))]


def review_split(split: str) -> list[dict]:
    """The fixed rows of one split (``train`` or ``validation``)."""
    if split not in SPLIT_SEEDS:
        raise KeyError(f"reviews task has splits {sorted(SPLIT_SEEDS)}, not {split!r}")
    return review_rows(SPLIT_SIZES[split], SPLIT_SEEDS[split], split)
