"""Declarative text tasks: how a data-set row becomes a prompt and a set of candidate answers.

Each task is one :class:`TextTaskSpec`: where its data lives (hub name, config, splits), how a
row becomes a :class:`Sample`, how a Sample becomes the prompt text (the template), the
candidate verbalisers and the metric. Classification is scored by comparing the model's
length-normalised log-likelihood of every candidate continuation (see ``hiso.text.scoring``),
never by reading one "label 1" logit: that is what keeps 3-way tasks such as CB correct.

Label conventions follow the hub data sets: candidate ``i`` is the verbaliser of label ``i``.
Rows whose label is -1 (GLUE/SuperGLUE test splits) are unlabelled and map to ``None``.

Hub names are the canonical, script-free repositories (``nyu-mll/glue``, ``rajpurkar/squad``,
``aps/super_glue``; the short names ``glue``/``squad``/``super_glue`` redirect to them online,
but an offline cache is keyed by the full name). WSC uses the ``wsc.fixed`` config, whose span
indices are corrected.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import UserError
from .reviews import review_split
from .synthetic import synthetic_split


@dataclass(frozen=True)
class Sample:
    """One example, ready for a template.

    ``fields``: the text pieces the template reads, by name (so templates stay declarative).
    ``candidates``: the verbalised options for classification, None for generation.
    ``correct``: index of the right candidate (classification).
    ``golds``: gold answers (generation); the first is the training target.
    ``uid``: a stable id set by the loader (``task/split/position``).
    """

    fields: Mapping[str, str]
    candidates: tuple[str, ...] | None = None
    correct: int | None = None
    golds: tuple[str, ...] = ()
    uid: str = ""


@dataclass(frozen=True)
class TextTaskSpec:
    """Everything the suite needs to know about one text task; no model, no tokenizer.

    ``columns`` are the hub columns a row must provide (local jsonl files are checked against
    them). ``synthetic_rows(split)``, when set, generates the rows instead of a hub download.
    """

    name: str
    metric: Literal["accuracy", "f1"]
    row_to_sample: Callable[[Mapping[str, Any]], Sample | None]
    template: Callable[[Sample], str]
    verbalizers: tuple[str, ...] | None
    columns: tuple[str, ...]
    hub_name: str | None
    hub_config: str | None = None
    train_split: str = "train"
    #: labelled split used for reporting; train/dev are carved from ``train_split``
    eval_split: str = "validation"
    hub_revision: str | None = None
    synthetic_rows: Callable[[str], list[dict]] | None = field(default=None, repr=False)
    #: prepended to a gold answer to form the training target (the prompt ends in "Answer:")
    answer_prefix: str = " "
    #: labelled rows of the hub's train and eval splits: a config asking for more is refused
    #: before anything is loaded (n_train + n_dev <= train_rows, n_eval <= eval_rows)
    train_rows: int | None = None
    eval_rows: int | None = None

    @property
    def is_generation(self) -> bool:
        return self.verbalizers is None

    @property
    def hub_id(self) -> str:
        """``name (config ...)`` for messages."""
        return f"{self.hub_name} (config {self.hub_config})" if self.hub_config else str(self.hub_name)

    def to_sample(self, row: Mapping[str, Any]) -> Sample | None:
        return self.row_to_sample(row)

    def encode(self, sample: Sample) -> str:
        """The prompt text; a candidate or answer is appended after it, verbatim."""
        return self.template(sample)

    def target(self, sample: Sample) -> str:
        """Training continuation: the correct candidate, or the first gold answer."""
        if self.is_generation:
            if not sample.golds:
                raise ValueError(f"{self.name}: sample {sample.uid!r} has no gold answer")
            return self.answer_prefix + sample.golds[0]
        assert sample.candidates is not None and sample.correct is not None
        return sample.candidates[sample.correct]


# -- row -> Sample ---------------------------------------------------------------------------
def _labelled(row: Mapping[str, Any]) -> int | None:
    label = row.get("label")
    return None if label is None or int(label) < 0 else int(label)


def _classification(
    verbalizers: tuple[str, ...], *names: str
) -> Callable[[Mapping[str, Any]], Sample | None]:
    """A row function copying ``names`` into fields and mapping label i -> candidate i."""

    def convert(row: Mapping[str, Any]) -> Sample | None:
        label = _labelled(row)
        if label is None:
            return None
        if label >= len(verbalizers):
            raise ValueError(f"label {label} outside {len(verbalizers)} candidates")
        fields = {n: str(row[n]).strip() for n in names}
        return Sample(fields=fields, candidates=verbalizers, correct=label)

    return convert


def _squad_sample(row: Mapping[str, Any]) -> Sample | None:
    answers = row["answers"]["text"]
    golds = tuple(dict.fromkeys(a.strip() for a in answers if a.strip()))
    if not golds:
        return None
    fields = {n: str(row[n]).strip() for n in ("title", "context", "question")}
    return Sample(fields=fields, golds=golds)


# -- verbalisers (label order of the hub data set) -------------------------------------------
SENTIMENT = (" terrible", " great")  # 0 negative, 1 positive
NO_YES = ("No", "Yes")  # 0 False / not duplicate, 1 True / duplicate
YES_NO = ("Yes", "No")  # RTE: 0 entailment, 1 not_entailment
YES_NO_MAYBE = ("Yes", "No", "Maybe")  # CB: 0 entailment, 1 contradiction, 2 neutral
ANSWER_NO_YES = (" No", " Yes")  # BoolQ: the prompt ends in "Answer:"


# -- templates --------------------------------------------------------------------------------
def _f(sample: Sample, name: str) -> str:
    return sample.fields[name]


def sst2_template(s: Sample) -> str:
    return f"{_f(s, 'sentence')} It was"


def qqp_template(s: Sample) -> str:
    return (
        f"Question 1: {_f(s, 'question1')}\nQuestion 2: {_f(s, 'question2')}\n"
        "Do these two questions ask the same thing? Yes or No?\n"
    )


def cb_template(s: Sample) -> str:
    return (
        f"Suppose {_f(s, 'premise')} Can we infer that \"{_f(s, 'hypothesis')}\"? "
        "Yes, No, or Maybe?\n"
    )


def rte_template(s: Sample) -> str:
    return f"{_f(s, 'premise')}\nDoes this mean that \"{_f(s, 'hypothesis')}\" is true? Yes or No?\n"


def boolq_template(s: Sample) -> str:
    return f"{_f(s, 'passage')}\nQuestion: {_f(s, 'question')}?\nAnswer:"


def wic_template(s: Sample) -> str:
    return (
        f"Does the word \"{_f(s, 'word')}\" have the same meaning in these two sentences? "
        f"Yes or No?\n{_f(s, 'sentence1')}\n{_f(s, 'sentence2')}\n"
    )


def wsc_template(s: Sample) -> str:
    return (
        f"{_f(s, 'text')}\nIn the previous sentence, does the pronoun "
        f"\"{_f(s, 'span2_text').lower()}\" refer to {_f(s, 'span1_text')}? Yes or No?\n"
    )


def multirc_template(s: Sample) -> str:
    return (
        f"{_f(s, 'paragraph')}\nQuestion: {_f(s, 'question')}\n"
        f"I found this answer \"{_f(s, 'answer')}\". Is that correct? Yes or No?\n"
    )


def squad_template(s: Sample) -> str:
    return (
        f"Title: {_f(s, 'title')}\nContext: {_f(s, 'context')}\n"
        f"Question: {_f(s, 'question')}\nAnswer:"
    )


# -- the registry -----------------------------------------------------------------------------
def _super_glue(name: str, config: str, rows: tuple[int, int], template, verbalizers,
                *cols: str) -> TextTaskSpec:
    return TextTaskSpec(
        name=name,
        metric="accuracy",
        row_to_sample=_classification(verbalizers, *cols),
        template=template,
        verbalizers=verbalizers,
        columns=(*cols, "label"),
        hub_name="aps/super_glue",
        hub_config=config,
        train_rows=rows[0],
        eval_rows=rows[1],
    )


def _generated_sentiment(name: str, rows) -> TextTaskSpec:
    """A generated task in SST-2's shape (columns, template, verbalisers): no download."""
    return TextTaskSpec(
        name=name,
        metric="accuracy",
        row_to_sample=_classification(SENTIMENT, "sentence"),
        template=sst2_template,
        verbalizers=SENTIMENT,
        columns=("sentence", "label"),
        hub_name=None,
        synthetic_rows=rows,
    )


TASKS: dict[str, TextTaskSpec] = {
    spec.name: spec
    for spec in (
        TextTaskSpec(
            name="sst2",
            metric="accuracy",
            row_to_sample=_classification(SENTIMENT, "sentence"),
            template=sst2_template,
            verbalizers=SENTIMENT,
            columns=("sentence", "label"),
            hub_name="nyu-mll/glue",
            hub_config="sst2",
            train_rows=67349,
            eval_rows=872,
        ),
        TextTaskSpec(
            name="qqp",
            metric="accuracy",
            row_to_sample=_classification(NO_YES, "question1", "question2"),
            template=qqp_template,
            verbalizers=NO_YES,
            columns=("question1", "question2", "label"),
            hub_name="nyu-mll/glue",
            hub_config="qqp",
            train_rows=363846,
            eval_rows=40430,
        ),
        TextTaskSpec(
            name="squad",
            metric="f1",
            row_to_sample=_squad_sample,
            template=squad_template,
            verbalizers=None,
            columns=("title", "context", "question", "answers"),
            hub_name="rajpurkar/squad",
            hub_config="plain_text",
            train_rows=87599,
            eval_rows=10570,
        ),
        _super_glue("cb", "cb", (250, 56), cb_template, YES_NO_MAYBE, "premise", "hypothesis"),
        _super_glue(
            "wsc", "wsc.fixed", (554, 104), wsc_template, NO_YES, "text", "span1_text", "span2_text"
        ),
        _super_glue("wic", "wic", (5428, 638), wic_template, NO_YES, "word", "sentence1", "sentence2"),
        _super_glue("rte", "rte", (2490, 277), rte_template, YES_NO, "premise", "hypothesis"),
        _super_glue("boolq", "boolq", (9427, 3270), boolq_template, ANSWER_NO_YES, "passage", "question"),
        _super_glue(
            "multirc", "multirc", (27243, 4848), multirc_template, NO_YES, "paragraph", "question",
            "answer"
        ),
        _generated_sentiment("synthetic", synthetic_split),
        _generated_sentiment("reviews", review_split),  # held-out polarity words in eval
    )
}


def get_task(name: str) -> TextTaskSpec:
    """The spec for ``name``; a :class:`UserError` listing the known tasks otherwise."""
    try:
        return TASKS[name]
    except KeyError:
        raise UserError(f"unknown text task {name!r}; known: {', '.join(sorted(TASKS))}") from None
