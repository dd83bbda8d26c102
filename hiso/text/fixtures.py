"""Offline test assets: a word-level tokenizer, a tiny random OPT, and small task files.

Why: tests and the CPU smoke tier must exercise the real loading code
(``AutoTokenizer``/``AutoModelForCausalLM.from_pretrained``, ``datasets`` JSON loading, the
templates) without any download. The assets are built from scratch, deterministically, in
seconds; nothing here is used by real runs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from .reviews import review_rows
from .synthetic import synthetic_rows
from .templates import get_task

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"
SPECIAL_TOKENS = (PAD, EOS, UNK)

#: the neutral words fixture rows are made of
WORD_BANK: tuple[str, ...] = (
    "river", "stone", "garden", "window", "yellow", "quiet", "market", "teacher", "city",
    "bread", "music", "winter", "paper", "bridge", "forest", "letter", "doctor", "train",
    "summer", "castle", "horse", "cloud", "lamp", "ocean", "table", "violin",
)


def _pre_tokenize(text: str) -> list[str]:
    from tokenizers import pre_tokenizers

    return [piece for piece, _ in pre_tokenizers.Whitespace().pre_tokenize_str(text)]


def words_in(texts: Iterable[str]) -> list[str]:
    """Distinct word-level tokens of ``texts`` (first-seen order), as the tiny tokenizer splits."""
    seen: dict[str, None] = {}
    for text in texts:
        for piece in _pre_tokenize(text):
            seen.setdefault(piece, None)
    return list(seen)


def build_tiny_tokenizer(words: Iterable[str], save_dir: str | os.PathLike | None = None):
    """Word-level fast tokenizer over ``words`` plus ``<pad>``, ``</s>`` (BOS and EOS) and ``<unk>``.

    Like OPT's tokenizer, it prepends ``</s>`` to every encoded text (post-processor) and uses
    ``</s>`` as EOS. Whitespace pre-tokenisation drops spaces and newlines, so a prompt's
    trailing space or newline does not change its ids. Saved with ``save_pretrained`` when
    ``save_dir`` is given, loadable with ``AutoTokenizer.from_pretrained``.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for word in words_in(words):
        vocab.setdefault(word, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    eos_id = vocab[EOS]
    core.post_processor = processors.TemplateProcessing(
        single=f"{EOS} $A", pair=f"{EOS} $A $B", special_tokens=[(EOS, eos_id)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=EOS,
        eos_token=EOS,
        unk_token=UNK,
        pad_token=PAD,
        padding_side="left",
    )
    if save_dir is not None:
        tokenizer.save_pretrained(str(save_dir))
    return tokenizer


def build_tiny_opt(
    tokenizer,
    save_dir: str | os.PathLike | None,
    seed: int,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    ffn: int = 64,
    max_pos: int = 128,
):
    """A randomly initialised ``OPTForCausalLM`` sized to the tokenizer, in eval mode.

    Dropout is off so forwards are deterministic (ZO differences need that). The global torch
    RNG is forked, not consumed. The tokenizer is saved next to the weights, so one directory
    loads with both ``AutoTokenizer`` and ``AutoModelForCausalLM``.
    """
    from transformers import OPTConfig, OPTForCausalLM

    config = OPTConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        ffn_dim=ffn,
        num_attention_heads=heads,
        max_position_embeddings=max_pos,
        word_embed_proj_dim=hidden,
        do_layer_norm_before=True,
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        layerdrop=0.0,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = OPTForCausalLM(config)
    model.eval()
    if save_dir is not None:
        model.save_pretrained(str(save_dir))
        tokenizer.save_pretrained(str(save_dir))
    return model


# -- task files in the hub's column format ----------------------------------------------------
def _sentence(rng, lo: int = 4, hi: int = 8) -> str:
    k = int(rng.integers(lo, hi + 1))
    return " ".join(WORD_BANK[i] for i in rng.integers(len(WORD_BANK), size=k))


def _row(task: str, i: int, rng) -> dict:
    """One row with the hub data set's columns; texts from WORD_BANK, labels uniform."""
    if task == "sst2":
        return {"sentence": _sentence(rng), "label": int(rng.integers(2)), "idx": i}
    if task == "qqp":
        return {
            "question1": _sentence(rng) + " ?",
            "question2": _sentence(rng) + " ?",
            "label": int(rng.integers(2)),
            "idx": i,
        }
    if task in ("cb", "rte"):
        return {
            "premise": _sentence(rng) + " .",
            "hypothesis": _sentence(rng) + " .",
            "idx": i,
            "label": int(rng.integers(3 if task == "cb" else 2)),
        }
    if task == "boolq":
        return {
            "question": _sentence(rng),
            "passage": _sentence(rng, 8, 12) + " .",
            "idx": i,
            "label": int(rng.integers(2)),
        }
    if task == "wic":
        word = WORD_BANK[int(rng.integers(len(WORD_BANK)))]
        s1, s2 = f"{_sentence(rng)} {word}", f"{word} {_sentence(rng)}"
        return {
            "word": word,
            "sentence1": s1,
            "sentence2": s2,
            "start1": len(s1) - len(word),
            "start2": 0,
            "end1": len(s1),
            "end2": len(word),
            "idx": i,
            "label": int(rng.integers(2)),
        }
    if task == "wsc":
        words = _sentence(rng, 6, 9).split()
        words[-2] = "it"
        return {
            "text": " ".join(words),
            "span1_index": 0,
            "span2_index": len(words) - 2,
            "span1_text": words[0],
            "span2_text": "it",
            "idx": i,
            "label": int(rng.integers(2)),
        }
    if task == "multirc":
        return {
            "paragraph": _sentence(rng, 8, 12) + " .",
            "question": _sentence(rng) + " ?",
            "answer": _sentence(rng, 1, 3),
            "idx": {"paragraph": i // 4, "question": i // 2, "answer": i},
            "label": int(rng.integers(2)),
        }
    if task == "squad":
        words = _sentence(rng, 8, 12).split()
        a, b = sorted(int(x) for x in rng.choice(len(words), size=2, replace=False))
        b = min(b, a + 2)
        answer = " ".join(words[a : b + 1])
        context = " ".join(words)
        start = len(" ".join(words[:a])) + (1 if a else 0)
        assert context[start : start + len(answer)] == answer
        return {
            "id": f"q{i}",
            "title": WORD_BANK[int(rng.integers(len(WORD_BANK)))],
            "context": context,
            "question": _sentence(rng) + " ?",
            "answers": {"text": [answer, answer], "answer_start": [start, start]},
        }
    raise KeyError(task)


def write_task_files(
    task_name: str, out_dir: str | os.PathLike, n_per_split: int, seed: int
) -> dict[str, Path]:
    """Write ``{out_dir}/{split}.jsonl`` for the task's train and eval splits; return the paths.

    Rows have the hub data set's columns, so ``load_examples(spec, split, data_dir=out_dir)``
    reads them through the same code as a real run. Deterministic in ``seed``. The generated
    tasks (synthetic, reviews) write rows of their own generators (learnable labels); other
    tasks get random labels.
    """
    spec = get_task(task_name)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for k, split in enumerate((spec.train_split, spec.eval_split)):
        split_seed = seed * 1009 + k
        if task_name == "synthetic":
            rows = synthetic_rows(n_per_split, split_seed)
        elif task_name == "reviews":
            rows = review_rows(n_per_split, split_seed, split)
        else:
            rng = np.random.default_rng(split_seed)
            rows = [_row(task_name, i, rng) for i in range(n_per_split)]
        path = out / f"{split}.jsonl"
        with path.open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")
        paths[split] = path
    return paths
