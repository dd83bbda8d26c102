"""The generated `reviews` task: labels right by construction, held-out vocabulary in eval."""

from __future__ import annotations

import re

import pytest

from hiso.text import data, reviews
from hiso.text.templates import get_task

PATTERNS = {  # sentence frame -> (adjective group holding the label, flips the label)
    "plain": (re.compile(r"^The (?P<s>[a-z ]+) was (?:[a-z]+ )*?(?P<a>[a-z]+)\.$"), "a", False),
    "negated": (re.compile(r"^The (?P<s>[a-z ]+) was not (?:[a-z]+ )*?(?P<a>[a-z]+)\.$"), "a", True),
    "contrast": (re.compile(r"^The (?P<s>[a-z ]+) was (?P<b>[a-z]+), but overall it was "
                            r"(?:[a-z]+ )*?(?P<a>[a-z]+)\.$"), "a", False),
    "pair": (re.compile(r"^The (?P<s>[a-z ]+) was (?:[a-z]+ )*?(?P<a>[a-z]+), and the "
                        r"(?P<t>[a-z ]+) was (?P<b>[a-z]+)\.$"), "a", False),
}


def polarity(word: str) -> int:
    if word in reviews.POSITIVE_TRAIN + reviews.POSITIVE_EVAL:
        return 1
    if word in reviews.NEGATIVE_TRAIN + reviews.NEGATIVE_EVAL:
        return 0
    raise AssertionError(f"{word!r} is no polarity word")


def rule_label(sentence: str) -> tuple[int, str]:
    """The label a reader derives from the sentence alone (the rules of the module doc)."""
    for kind in ("contrast", "pair", "negated", "plain"):  # most specific frame first
        pattern, group, flips = PATTERNS[kind]
        m = pattern.match(sentence)
        if m:
            y = polarity(m.group(group))
            if kind == "pair":
                assert polarity(m.group("b")) == y  # both adjectives agree
            if kind == "contrast":
                assert polarity(m.group("b")) != y  # the first clause says the opposite
            return (1 - y if flips else y), kind
    raise AssertionError(f"no frame matches {sentence!r}")


@pytest.mark.parametrize("split", ["train", "validation"])
def test_every_label_follows_the_stated_rules(split):
    rows = reviews.review_split(split)
    assert len(rows) == reviews.SPLIT_SIZES[split]
    kinds = set()
    for r in rows:
        y, kind = rule_label(r["sentence"])
        assert y == r["label"], r
        kinds.add(kind)
    assert kinds == {"plain", "negated", "contrast", "pair"}
    share = sum(r["label"] for r in rows) / len(rows)
    assert 0.45 < share < 0.55


def test_eval_split_uses_only_held_out_polarity_words_and_subjects():
    assert not set(reviews.POSITIVE_TRAIN + reviews.NEGATIVE_TRAIN) & set(
        reviews.POSITIVE_EVAL + reviews.NEGATIVE_EVAL)
    assert not set(reviews.SUBJECTS_TRAIN) & set(reviews.SUBJECTS_EVAL)
    train_words = {w for r in reviews.review_split("train") for w in re.findall(r"[a-z]+", r["sentence"])}
    eval_words = {w for r in reviews.review_split("validation") for w in re.findall(r"[a-z]+", r["sentence"])}
    polar_eval = set(reviews.POSITIVE_EVAL + reviews.NEGATIVE_EVAL)
    polar_train = set(reviews.POSITIVE_TRAIN + reviews.NEGATIVE_TRAIN)
    assert polar_eval <= eval_words and not polar_eval & train_words
    assert polar_train <= train_words and not polar_train & eval_words


def test_rows_are_constants_and_load_as_sst2_shaped_samples():
    assert reviews.review_split("train") == reviews.review_split("train")
    spec = get_task("reviews")
    splits = data.load_splits(spec, n_train=300, n_dev=50, n_eval=100, seed=0)
    assert not {s.uid for s in splits.train} & {s.uid for s in splits.dev}
    s = splits.eval[0]
    assert spec.encode(s) == s.fields["sentence"] + " It was"
    assert s.candidates == (" terrible", " great")
    assert {u.uid.split("/")[1] for u in splits.eval} == {"validation"}
    assert {u.uid.split("/")[1] for u in splits.train + splits.dev} == {"train"}
