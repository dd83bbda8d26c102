"""Scoring text tasks with a causal LM: candidate log-likelihoods, losses, greedy answers.

Why this shape:
* Classification is scored by the mean log-probability of each candidate's own tokens given the
  prompt (length-normalised, so a two-token option is not penalised against a one-token one),
  and the loss is the cross-entropy of the softmax over those scores. No "label 1" logit.
* Rows are **left-padded**, so every continuation ends at the last position. Only the last K+1
  positions' logits are needed (K = longest continuation): HF models are asked for just those
  (``logits_to_keep``), and log-softmax runs only on the continuation positions, never on the
  whole [batch, seq, vocab] tensor. For OPT-1.3B's 50k vocabulary this is most of the memory.
* Position ids are passed explicitly (cumulative sum of the attention mask) when the model
  accepts them, so left padding does not shift positions in models that would otherwise count
  from the first (padded) column.
* Every function takes ``model``: an HF causal LM, or any callable
  ``fn(input_ids, attention_mask) -> logits`` (or an object with ``.logits``). The returned
  logits may cover only the last positions, aligned to the end; a callable that accepts an
  ``n_last`` keyword is told how many are needed. So the engine can score perturbed weights
  (in-place perturbation, ``torch.func.functional_call`` ...) with the same code.
* Generation is greedy (argmax, no sampling, no beams): evaluation is deterministic.

Gradients are not disabled here (first-order baselines need them); ZO callers wrap calls in
``torch.no_grad()`` and keep the model in ``eval()`` mode so forwards are deterministic.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F

from .templates import Sample, TextTaskSpec


# -- calling a model --------------------------------------------------------------------------
def _is_hf(model) -> bool:
    """A Hugging Face model (by its generation interface, not by a class check or a signature)."""
    return isinstance(model, torch.nn.Module) and callable(getattr(model, "can_generate", None))


def _accepted(model) -> tuple[frozenset[str], bool]:
    """(keyword names the forward declares, whether it also takes ``**kwargs``)."""
    target = model.forward if isinstance(model, torch.nn.Module) else model
    try:
        params = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return frozenset(), False
    return (frozenset(p.name for p in params if p.kind is not p.VAR_KEYWORD),
            any(p.kind is p.VAR_KEYWORD for p in params))


def _optional_kwargs(model, wanted: dict[str, Any]) -> dict[str, Any]:
    """The subset of ``wanted`` (optional keywords: position ids, logits_to_keep, use_cache) to pass.

    A keyword the forward names is passed. Why not only those: transformers moves arguments
    between named parameters and ``**kwargs`` from one release to the next, and a silently dropped
    ``position_ids`` changes the numbers of left-padded rows. So an HF model whose forward takes
    ``**kwargs`` gets every keyword it does not name too: a model consumes it or ignores it.
    A plain callable may take ``logits_to_keep`` as ``n_last``.
    """
    names, var_kw = _accepted(model)
    lenient = var_kw and _is_hf(model)
    out: dict[str, Any] = {}
    for key, value in wanted.items():
        if key == "logits_to_keep" and key not in names:
            if "n_last" in names:
                out["n_last"] = value
            elif lenient:
                out[key] = value
        elif key in names or lenient:
            out[key] = value
    return out


def _device(model) -> torch.device | None:
    if isinstance(model, torch.nn.Module):
        for p in model.parameters():
            return p.device
    return None


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that skip left padding: 0, 1, ... from each row's first real token."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def forward_logits(
    model, input_ids: torch.Tensor, attention_mask: torch.Tensor, n_last: int
) -> torch.Tensor:
    """Logits of the last ``n_last`` positions, shape [batch, n_last, vocab].

    HF models get ``logits_to_keep``, explicit position
    ids and ``use_cache=False`` (see :func:`_optional_kwargs`).
    """
    device = _device(model)
    if device is not None:
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    extra = _optional_kwargs(model, {"position_ids": positions_from_mask(attention_mask),
                                     "use_cache": False, "logits_to_keep": n_last})
    names, _ = _accepted(model)
    if _is_hf(model) or {"input_ids", "attention_mask"} <= names:
        out = model(input_ids=input_ids, attention_mask=attention_mask, **extra)
    else:
        out = model(input_ids, attention_mask, **extra)
    logits = getattr(out, "logits", out)
    if logits.dim() != 3 or logits.shape[0] != input_ids.shape[0] or logits.shape[1] < n_last:
        raise ValueError(
            f"model returned logits of shape {tuple(logits.shape)}; need [batch, >= {n_last}, vocab]"
        )
    return logits[:, logits.shape[1] - n_last :]


# -- building inputs --------------------------------------------------------------------------
@dataclass
class CandidateBatch:
    """Left-padded (prompt + continuation) rows for a set of samples.

    Row r belongs to sample ``sample_index[r]`` and is its candidate ``candidate_index[r]``.
    ``targets``/``target_mask`` hold the continuation's token ids right-aligned in a window of
    the last K positions (K = longest continuation). ``correct[s]`` is sample s's right
    candidate (-1 if unknown). ``generation`` marks a single-continuation (answer) batch.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    targets: torch.Tensor
    target_mask: torch.Tensor
    sample_index: torch.Tensor
    candidate_index: torch.Tensor
    n_candidates: torch.Tensor
    correct: torch.Tensor
    generation: bool = False

    @property
    def n_samples(self) -> int:
        return int(self.n_candidates.numel())

    def to(self, device) -> "CandidateBatch":
        moved = {
            f.name: getattr(self, f.name).to(device)
            if isinstance(getattr(self, f.name), torch.Tensor)
            else getattr(self, f.name)
            for f in fields(self)
        }
        return CandidateBatch(**moved)


def _pad_id(tokenizer) -> int:
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    return 0


def _truncate_left(prompt_ids: list[int], budget: int, bos_id: int | None) -> list[int]:
    """Keep the prompt's end (where the question is); keep a leading BOS token if present."""
    if len(prompt_ids) <= budget:
        return prompt_ids
    if budget < 1:
        raise ValueError("max_length leaves no room for the prompt")
    if bos_id is not None and prompt_ids and prompt_ids[0] == bos_id and budget >= 2:
        return prompt_ids[:1] + prompt_ids[len(prompt_ids) - (budget - 1) :]
    return prompt_ids[len(prompt_ids) - budget :]


def _left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r) :] = 1
    return ids, mask


def _ids(tokenizer, text: str, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def _special_head(with_special: list[int], plain: list[int]) -> list[int]:
    """The special tokens a tokenizer puts before the text (OPT's ``</s>``, Llama's ``<s>``):
    what precedes ``plain`` in ``with_special`` (any trailing special token is dropped)."""
    n = len(plain)
    for i in range(len(with_special) - n + 1):
        if with_special[i : i + n] == plain:
            return with_special[:i]
    raise ValueError("tokenizer: the text's tokens change when special tokens are added")


def _split_joint(prompt_plain: list[int], joint: list[int]) -> int:
    """Where the continuation starts in the joint tokenisation: after the longest common prefix
    with the prompt's own tokens (a prompt token merged with the continuation's first
    characters counts as continuation)."""
    n = 0
    for a, b in zip(prompt_plain, joint):
        if a != b:
            break
        n += 1
    return n


def encode_pairs(
    tokenizer,
    prompts: Sequence[str],
    continuations: Sequence[Sequence[str]],
    correct: Sequence[int] | None = None,
    max_length: int | None = None,
    append_eos: bool = False,
) -> CandidateBatch:
    """Token rows for every (prompt, continuation) pair.

    Each row is the tokenisation of the joint text prompt + continuation, preceded by the
    tokenizer's special prefix (OPT's ``</s>``, Llama's ``<s>``), and the continuation's tokens
    are the ones it has *in that joint text*: the joint tokens after their longest common prefix
    with the prompt's own. Why not tokenise the continuation alone: a SentencePiece tokenizer
    (Llama-2, Mistral) then writes "Yes" after a newline as ``▁Yes`` where the text the model
    reads has ``Yes``, and can split a word differently; for byte-level BPE (OPT, GPT-2), whose
    pre-tokenizer cuts at the continuation's leading space or after the newline, both ways give
    the same ids (tested). Verbalisers carry their own leading space where the template needs
    one. With ``max_length``, the prompt is cut from the left. ``append_eos`` adds the EOS token
    to every continuation (answers: the model learns to stop).
    """
    if len(prompts) != len(continuations):
        raise ValueError(f"{len(prompts)} prompts for {len(continuations)} candidate lists")
    if not prompts:
        raise ValueError("empty batch")
    eos = tokenizer.eos_token_id
    if append_eos and eos is None:
        raise ValueError("append_eos needs a tokenizer with an eos token")
    rows, conts, sample_idx, cand_idx, n_cands = [], [], [], [], []
    for s, (prompt, options) in enumerate(zip(prompts, continuations)):
        if not options:
            raise ValueError(f"sample {s} has no candidate")
        prompt_plain = _ids(tokenizer, prompt, False)
        special = _special_head(_ids(tokenizer, prompt, True), prompt_plain)
        for c, option in enumerate(options):
            joint = _ids(tokenizer, prompt + option, False)
            n = _split_joint(prompt_plain, joint)
            cont = joint[n:] + ([int(eos)] if append_eos else [])
            if not joint[n:]:
                raise ValueError(f"candidate {option!r} tokenises to nothing")
            head = special + joint[:n]
            if max_length is not None:
                head = _truncate_left(head, max_length - len(cont), tokenizer.bos_token_id)
            if not head:
                raise ValueError(f"prompt of sample {s} tokenises to nothing")
            rows.append(head + cont)
            conts.append(cont)
            sample_idx.append(s)
            cand_idx.append(c)
        n_cands.append(len(options))

    pad = _pad_id(tokenizer)
    input_ids, attention_mask = _left_pad(rows, pad)
    k = max(len(c) for c in conts)
    targets = torch.full((len(rows), k), pad, dtype=torch.long)
    target_mask = torch.zeros((len(rows), k), dtype=torch.bool)
    for i, cont in enumerate(conts):
        targets[i, k - len(cont) :] = torch.tensor(cont, dtype=torch.long)
        target_mask[i, k - len(cont) :] = True
    return CandidateBatch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        targets=targets,
        target_mask=target_mask,
        sample_index=torch.tensor(sample_idx, dtype=torch.long),
        candidate_index=torch.tensor(cand_idx, dtype=torch.long),
        n_candidates=torch.tensor(n_cands, dtype=torch.long),
        correct=torch.tensor(
            list(correct) if correct is not None else [-1] * len(prompts), dtype=torch.long
        ),
    )


def encode_samples(
    spec: TextTaskSpec, tokenizer, samples: Sequence[Sample], max_length: int | None = None
) -> CandidateBatch:
    """Classification: every candidate of every sample. Generation: prompt + gold answer + EOS."""
    prompts = [spec.encode(s) for s in samples]
    if spec.is_generation:
        batch = encode_pairs(
            tokenizer,
            prompts,
            [[spec.target(s)] for s in samples],
            correct=[0] * len(samples),
            max_length=max_length,
            append_eos=True,
        )
        batch.generation = True
        return batch
    return encode_pairs(
        tokenizer,
        prompts,
        [list(s.candidates or ()) for s in samples],
        correct=[-1 if s.correct is None else s.correct for s in samples],
        max_length=max_length,
    )


# -- scores and losses ------------------------------------------------------------------------
def continuation_logprobs(model, batch: CandidateBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: (sum of the continuation tokens' log-probs, number of those tokens).

    Logits are requested for the last K+1 positions only; the row/position pairs holding a
    continuation token are selected first, and log-softmax (as logit - logsumexp, in float32)
    runs on that [n_tokens, vocab] slice alone.
    """
    k = batch.targets.shape[1]
    logits = forward_logits(model, batch.input_ids, batch.attention_mask, k + 1)[:, :k]
    mask = batch.target_mask.to(logits.device)
    picked = logits[mask].float()  # [n_tokens, vocab]: predicts each continuation token
    tokens = batch.targets.to(logits.device)[mask]
    token_lp = picked.gather(-1, tokens[:, None]).squeeze(-1) - torch.logsumexp(picked, dim=-1)
    rows = torch.arange(mask.shape[0], device=mask.device)[:, None].expand_as(mask)[mask]
    sums = torch.zeros(mask.shape[0], dtype=token_lp.dtype, device=token_lp.device)
    sums = sums.index_add(0, rows, token_lp)
    return sums, mask.sum(-1)


def candidate_scores(model, batch: CandidateBatch) -> torch.Tensor:
    """[n_samples, max_candidates] mean log-prob per candidate token; -inf where no candidate."""
    sums, counts = continuation_logprobs(model, batch)
    mean = sums / counts.to(sums.dtype)
    n_max = int(batch.n_candidates.max())
    scores = torch.full((batch.n_samples, n_max), float("-inf"), dtype=mean.dtype, device=mean.device)
    scores = scores.index_put(
        (batch.sample_index.to(mean.device), batch.candidate_index.to(mean.device)), mean
    )
    return scores


def classification_loss(scores: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of softmax(scores) against the correct candidate index."""
    correct = correct.to(scores.device)
    if bool((correct < 0).any()):
        raise ValueError("classification loss needs a correct candidate for every sample")
    return F.cross_entropy(scores, correct)


def predict(scores: torch.Tensor) -> torch.Tensor:
    """Index of the highest-scoring candidate per sample (first one on ties)."""
    return scores.argmax(dim=-1)


def generation_loss(model, batch: CandidateBatch) -> torch.Tensor:
    """Token-level cross-entropy of the answer (+EOS) given the prompt, averaged over tokens."""
    sums, counts = continuation_logprobs(model, batch)
    return -sums.sum() / counts.sum().to(sums.dtype)


def task_loss(model, batch: CandidateBatch) -> torch.Tensor:
    """The training loss the batch calls for: generation CE or candidate cross-entropy."""
    if batch.generation:
        return generation_loss(model, batch)
    return classification_loss(candidate_scores(model, batch), batch.correct)


# -- greedy generation ------------------------------------------------------------------------
#: where an HF model's output carries its key/value cache, and the keyword that takes it back:
#: ``cache`` (transformers >= 5.x; ``past_key_values`` is its deprecated alias there) or
#: ``past_key_values`` (4.x)
_CACHE_FIELDS = ("cache", "past_key_values")


def _returned_cache(out) -> tuple[str, Any] | None:
    """(keyword, cache) when a forward asked for ``use_cache=True`` really returned a cache."""
    keys = out.keys() if callable(getattr(out, "keys", None)) else ()
    for name in _CACHE_FIELDS:
        if name in keys and out[name] is not None:
            return name, out[name]
    return None


@torch.no_grad()
def greedy_generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    max_new_tokens: int,
    stop: Sequence[str] = ("\n",),
    max_length: int | None = None,
    use_cache: bool | None = None,
    device: torch.device | str | None = None,
) -> list[str]:
    """Greedy answers: argmax at each step, until EOS, a stop string or ``max_new_tokens``.

    The answer text is everything generated before EOS / the first stop string, stripped.
    ``max_length`` bounds prompt + answer (the prompt is cut from the left). HF models reuse
    their key/value cache (``use_cache=None`` means "if the first step returns one"; ``True``
    requires it); any other callable gets a full forward per step. Both give the same tokens (a
    test checks it). ``device``: where to put the ids for a plain callable (an HF model's own
    device is used otherwise).
    """
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be >= 1")
    eos = tokenizer.eos_token_id
    pad = _pad_id(tokenizer)
    heads = []
    for p in prompts:
        ids = _ids(tokenizer, p, True)
        if max_length is not None:
            ids = _truncate_left(ids, max_length - max_new_tokens, tokenizer.bos_token_id)
        heads.append(ids)
    ids, mask = _left_pad(heads, pad)
    device = _device(model) or device
    if device is not None:
        ids, mask = ids.to(device), mask.to(device)
    if use_cache and not _is_hf(model):
        raise ValueError("use_cache=True needs a Hugging Face model (a plain callable has no cache)")
    # Whether the cache is used is decided by what the first step returns (no signature test):
    # an HF model asked for use_cache=True hands back its cache, under the name its version uses.
    try_cache = _is_hf(model) and use_cache is not False
    n = len(prompts)
    generated: list[list[int]] = [[] for _ in range(n)]
    done = [False] * n
    cache: tuple[str, Any] | None = None
    step_ids = ids
    for step in range(max_new_tokens):
        if try_cache and (step == 0 or cache is not None):
            new = mask.shape[1] - step_ids.shape[1]  # positions of the tokens fed this step
            extra = _optional_kwargs(model, {"position_ids": positions_from_mask(mask)[:, new:],
                                             "logits_to_keep": 1})
            extra["use_cache"] = True
            if cache is not None:
                extra[cache[0]] = cache[1]
            out = model(input_ids=step_ids, attention_mask=mask, **extra)
            cache = _returned_cache(out)
            if cache is None and use_cache:
                raise ValueError(f"use_cache=True: {type(model).__name__} returned no key/value cache")
            last = out.logits[:, -1]
        else:
            last = forward_logits(model, ids, mask, 1)[:, -1]
        nxt = last.float().argmax(dim=-1)
        for b in range(n):
            if done[b]:
                continue
            token = int(nxt[b])
            if eos is not None and token == eos:
                done[b] = True
                continue
            generated[b].append(token)
            text = tokenizer.decode(generated[b], skip_special_tokens=True)
            if any(s in text for s in stop):
                done[b] = True
        if all(done):
            break
        step_ids = torch.where(
            torch.tensor(done, device=nxt.device), torch.full_like(nxt, pad), nxt
        )[:, None]
        ids = torch.cat([ids, step_ids], dim=1)
        mask = torch.cat([mask, torch.ones_like(step_ids)], dim=1)

    answers = []
    for g in generated:
        text = tokenizer.decode(g, skip_special_tokens=True)
        for s in stop:
            text = text.split(s, 1)[0]
        answers.append(text.strip())
    return answers


# -- evaluation -------------------------------------------------------------------------------
@torch.no_grad()
def evaluate_samples(
    model,
    tokenizer,
    spec: TextTaskSpec,
    samples: Sequence[Sample],
    batch_size: int = 16,
    max_length: int | None = None,
    max_new_tokens: int = 32,
) -> dict[str, float]:
    """The spec's metric over ``samples``, computed in batches, deterministically.

    Classification: ``{"accuracy"}`` (argmax of length-normalised candidate scores).
    Generation: ``{"f1", "em"}`` of greedy answers against every gold answer.
    """
    from .metrics import accuracy, mean_squad

    if not samples:
        raise ValueError("nothing to evaluate")
    chunks = [samples[i : i + batch_size] for i in range(0, len(samples), batch_size)]
    if spec.is_generation:
        answers: list[str] = []
        for chunk in chunks:
            answers += greedy_generate(
                model, tokenizer, [spec.encode(s) for s in chunk], max_new_tokens,
                max_length=max_length,
            )
        return mean_squad(answers, [list(s.golds) for s in samples])
    preds: list[int] = []
    for chunk in chunks:
        batch = encode_samples(spec, tokenizer, chunk, max_length=max_length)
        preds += predict(candidate_scores(model, batch)).tolist()
    return {"accuracy": accuracy(preds, [s.correct for s in samples])}
