"""Candidates are scored as their tokens appear in the joint text prompt + candidate.

Two tokenizers are built offline with ``tokenizers``: a byte-level BPE with OPT's leading
``</s>`` (OPT / GPT-2 style), where the joint tokenisation equals the old prompt-then-candidate
concatenation on every task, and a SentencePiece-style BPE with the Metaspace pre-tokenizer and
a leading ``<s>`` (as Llama-2 and Mistral tokenise), where a candidate after a newline is ``Yes``
in the joint text but ``▁Yes`` on its own.
"""

from __future__ import annotations

import json

import pytest
import torch

from hiso.text import fixtures, scoring
from hiso.text.templates import TASKS, get_task

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NEWLINE_TASKS = {"qqp", "cb", "rte", "wic", "wsc", "multirc"}  # prompts end in "\n", then "Yes"


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    root = tmp_path_factory.mktemp("joint")
    out = {}
    for name, spec in TASKS.items():
        path = fixtures.write_task_files(name, root / name, n_per_split=6, seed=5)[spec.train_split]
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        out[name] = [s for s in map(spec.to_sample, rows) if s is not None]
    return out


def corpus(samples) -> list[str]:
    texts = []
    for name, rows in samples.items():
        spec = get_task(name)
        for s in rows:
            texts += [spec.encode(s) + spec.target(s), *(s.candidates or ())]
    return texts


def _fast(core, bos: str, eos: str, pad: str):
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    core.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", special_tokens=[(bos, core.token_to_id(bos))])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token=bos, eos_token=eos,
                                   pad_token=pad, padding_side="left")


@pytest.fixture(scope="module")
def byte_bpe(samples):
    """GPT-2's byte-level pre-tokenizer and BPE; OPT's ``</s>`` before every text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator(corpus(samples), trainers.BpeTrainer(
        vocab_size=600, special_tokens=["<pad>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return _fast(core, "</s>", "</s>", "<pad>")


@pytest.fixture(scope="module")
def sentencepiece(samples):
    """Metaspace ("▁" for spaces, one prepended to the text) and BPE, ``<s>`` first: Llama-2's way
    (a newline is its own token there, <0x0A>: no piece merges across it)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split("\n", behavior="isolated"),
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")])
    core.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    core.train_from_iterator(corpus(samples), trainers.BpeTrainer(
        vocab_size=600, special_tokens=["<unk>", "<s>", "</s>"]))
    return _fast(core, "<s>", "</s>", "</s>")


def separate(tok, prompt: str, cand: str) -> tuple[list[int], list[int]]:
    """The old encoding: the prompt with special tokens, then the candidate tokenised alone."""
    return (tok(prompt)["input_ids"], tok(cand, add_special_tokens=False)["input_ids"])


def by_offsets(tok, prompt: str, cand: str) -> tuple[list[int], list[int]]:
    """An independent definition of "as it appears in the joint text": of the joint text's tokens,
    the candidate's are those ending after the prompt's last character (character offsets)."""
    enc = tok(prompt + cand, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    first = next(i for i, (a, b) in enumerate(offsets) if b > len(prompt) and b > a)
    return ids[:first], ids[first:]


def rows_of(batch, r: int) -> tuple[list[int], list[int]]:
    ids = batch.input_ids[r][batch.attention_mask[r].bool()].tolist()
    cont = batch.targets[r][batch.target_mask[r]].tolist()
    return ids[: len(ids) - len(cont)], cont


@pytest.mark.parametrize("task", sorted(TASKS))
def test_byte_level_bpe_joint_equals_the_separate_encoding(task, samples, byte_bpe):
    spec = get_task(task)
    batch = scoring.encode_samples(spec, byte_bpe, samples[task])
    pairs = [(spec.encode(s), c) for s in samples[task]
             for c in (s.candidates or (spec.target(s),))]
    for r, (prompt, cand) in enumerate(pairs):
        head, cont = separate(byte_bpe, prompt, cand)
        if spec.is_generation:
            cont = cont + [byte_bpe.eos_token_id]
        assert rows_of(batch, r) == (head, cont)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_sentencepiece_candidates_are_their_joint_text_tokens(task, samples, sentencepiece):
    spec = get_task(task)
    tok = sentencepiece
    batch = scoring.encode_samples(spec, tok, samples[task])
    pairs = [(spec.encode(s), c) for s in samples[task]
             for c in (s.candidates or (spec.target(s),))]
    differs = False
    for r, (prompt, cand) in enumerate(pairs):
        head, cont = by_offsets(tok, prompt, cand)
        if spec.is_generation:
            cont = cont + [tok.eos_token_id]
        assert rows_of(batch, r) == (head, cont)
        differs |= separate(tok, prompt, cand)[1] != by_offsets(tok, prompt, cand)[1]
    # where the prompt ends in a newline, the lone candidate gets a "▁" it does not have in the text
    assert differs == (task in NEWLINE_TASKS)


def test_sentencepiece_yes_after_a_newline(sentencepiece):
    tok = sentencepiece
    prompt = "Do these two questions ask the same thing? Yes or No?\n"
    batch = scoring.encode_pairs(tok, [prompt], [["No", "Yes"]], correct=[1])
    yes = rows_of(batch, 1)[1]
    assert tok.convert_ids_to_tokens(separate(tok, prompt, "Yes")[1])[0].startswith("▁")
    assert "".join(tok.convert_ids_to_tokens(yes)) == "Yes"  # no "▁": as the model reads it


def test_scores_are_the_joint_texts_log_likelihoods(sentencepiece):
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = sentencepiece
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config).eval()
    prompts = ["Suppose it rained. Can we infer that \"it was wet\"? Yes, No, or Maybe?\n",
               "The film was long. It was"]
    cands = [["Yes", "No", "Maybe"], [" terrible", " great"]]
    batch = scoring.encode_pairs(tok, prompts, cands, correct=[0, 1])
    with torch.no_grad():
        scores = scoring.candidate_scores(model, batch)
        for s, (p, cs) in enumerate(zip(prompts, cands)):
            for c, cand in enumerate(cs):
                head, cont = by_offsets(tok, p, cand)
                logp = torch.log_softmax(model(torch.tensor([head + cont])).logits[0].double(), -1)
                want = sum(logp[len(head) + j - 1, t].item() for j, t in enumerate(cont)) / len(cont)
                assert scores[s, c].item() == pytest.approx(want, abs=1e-5)
