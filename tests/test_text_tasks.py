"""Text-task layer: templates, metrics, loading, splits, tiny-OPT fixtures and scoring."""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
import textwrap
from dataclasses import replace

import pytest
import torch

from hiso.errors import UserError
from hiso.text import data, fixtures, metrics, scoring, synthetic
from hiso.text.templates import TASKS, Sample, get_task

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- templates on hand-written rows ----------------------------------------------------------
def prompt_of(task: str, row: dict) -> tuple[str, Sample]:
    spec = get_task(task)
    sample = spec.to_sample(row)
    assert sample is not None
    return spec.encode(sample), sample


def test_sst2_template():
    prompt, s = prompt_of("sst2", {"sentence": "a gripping , funny film ", "label": 1, "idx": 7})
    assert prompt == "a gripping , funny film It was"
    assert s.candidates == (" terrible", " great") and s.correct == 1


def test_qqp_template_reads_both_questions():
    row = {"question1": "How do I learn Python?", "question2": "What is a good Python course?",
           "label": 0, "idx": 1}
    prompt, s = prompt_of("qqp", row)
    assert prompt == (
        "Question 1: How do I learn Python?\nQuestion 2: What is a good Python course?\n"
        "Do these two questions ask the same thing? Yes or No?\n"
    )
    assert prompt.count("How do I learn Python?") == 1
    assert s.candidates == ("No", "Yes") and s.correct == 0


def test_cb_template_has_three_candidates():
    row = {"premise": "It rained all day.", "hypothesis": "The ground is dry", "label": 2, "idx": 0}
    prompt, s = prompt_of("cb", row)
    assert prompt == (
        'Suppose It rained all day. Can we infer that "The ground is dry"? Yes, No, or Maybe?\n'
    )
    assert s.candidates == ("Yes", "No", "Maybe") and s.correct == 2
    for label, word in enumerate(("Yes", "No", "Maybe")):
        sample = get_task("cb").to_sample({**row, "label": label})
        assert sample.candidates[sample.correct] == word


@pytest.mark.parametrize(
    "task,row,expected,candidates,correct",
    [
        ("rte", {"premise": "Cats purr.", "hypothesis": "Cats make sounds", "label": 0},
         'Cats purr.\nDoes this mean that "Cats make sounds" is true? Yes or No?\n',
         ("Yes", "No"), 0),
        ("boolq", {"passage": "Water boils at 100 C.", "question": "does water boil at 100 c",
                   "label": 1},
         "Water boils at 100 C.\nQuestion: does water boil at 100 c?\nAnswer:", (" No", " Yes"), 1),
        ("wic", {"word": "bank", "sentence1": "He sat on the bank.", "sentence2": "The bank is shut.",
                 "start1": 14, "start2": 4, "end1": 18, "end2": 8, "label": 0},
         'Does the word "bank" have the same meaning in these two sentences? Yes or No?\n'
         "He sat on the bank.\nThe bank is shut.\n", ("No", "Yes"), 0),
        ("wsc", {"text": "Mark told Pete he was late.", "span1_index": 0, "span2_index": 3,
                 "span1_text": "Mark", "span2_text": "He", "label": 1},
         'Mark told Pete he was late.\nIn the previous sentence, does the pronoun "he" refer to '
         "Mark? Yes or No?\n", ("No", "Yes"), 1),
        ("multirc", {"paragraph": "Ann has two dogs.", "question": "How many dogs?",
                     "answer": "Two", "idx": {"paragraph": 0, "question": 0, "answer": 0},
                     "label": 1},
         'Ann has two dogs.\nQuestion: How many dogs?\nI found this answer "Two". Is that '
         "correct? Yes or No?\n", ("No", "Yes"), 1),
        ("synthetic", {"sentence": "the movie was awful", "label": 0, "idx": 0},
         "the movie was awful It was", (" terrible", " great"), 0),
    ],
)
def test_classification_templates(task, row, expected, candidates, correct):
    prompt, s = prompt_of(task, row)
    assert prompt == expected
    assert s.candidates == candidates and s.correct == correct
    assert get_task(task).metric == "accuracy"


def test_squad_template_and_golds():
    row = {"id": "x1", "title": "Cats", "context": "The cat sat on the mat.",
           "question": "Where did the cat sit?",
           "answers": {"text": ["on the mat", "the mat", "on the mat"], "answer_start": [12, 15, 12]}}
    prompt, s = prompt_of("squad", row)
    assert prompt == (
        "Title: Cats\nContext: The cat sat on the mat.\nQuestion: Where did the cat sit?\nAnswer:"
    )
    spec = get_task("squad")
    assert s.candidates is None and s.golds == ("on the mat", "the mat")
    assert spec.metric == "f1" and spec.is_generation
    assert spec.target(s) == " on the mat"


def test_unlabelled_rows_are_skipped_and_unknown_task_is_a_user_error():
    assert get_task("sst2").to_sample({"sentence": "x", "label": -1, "idx": 0}) is None
    with pytest.raises(UserError, match="unknown text task 'nope'.*sst2"):
        get_task("nope")


def test_registry_names_hub_sources():
    assert {n: (TASKS[n].hub_name, TASKS[n].hub_config) for n in ("sst2", "qqp", "cb", "wsc")} == {
        "sst2": ("nyu-mll/glue", "sst2"), "qqp": ("nyu-mll/glue", "qqp"),
        "cb": ("aps/super_glue", "cb"), "wsc": ("aps/super_glue", "wsc.fixed"),
    }
    assert set(TASKS) == {"sst2", "qqp", "squad", "cb", "wsc", "wic", "rte", "boolq", "multirc",
                          "synthetic", "reviews"}


# -- metrics ----------------------------------------------------------------------------------
def test_squad_normalisation():
    assert metrics.normalize_answer("  The Cat,  sat!  ") == "cat sat"
    assert metrics.normalize_answer("An apple a day") == "apple day"
    assert metrics.normalize_answer("theatre") == "theatre"  # articles only as whole words


def test_squad_f1_em_hand_computed():
    # "cat sat" vs "cat sat down": 2 common; P = 2/2, R = 2/3, F1 = 2PR/(P+R) = 0.8
    assert metrics.squad_f1("the cat sat", ["a cat sat down"]) == pytest.approx(0.8)
    assert metrics.squad_em("the cat sat", ["a cat sat down"]) == 0.0
    # max over golds
    assert metrics.squad_f1("the cat sat", ["dog", "The cat sat!"]) == 1.0
    assert metrics.squad_em("the cat sat", ["dog", "The cat sat!"]) == 1.0
    # repeated tokens count once per match: P = 1/2, R = 1 -> 2/3
    assert metrics.squad_f1("cat cat", "cat") == pytest.approx(2 / 3)
    assert metrics.squad_f1("dog", "cat") == 0.0
    assert metrics.squad_f1("the", "a") == 1.0  # both normalise to nothing
    assert metrics.mean_squad(["the cat sat", "dog"], [["a cat sat down"], ["dog"]]) == {
        "f1": pytest.approx(0.9), "em": 0.5}
    assert metrics.accuracy([1, 0, 2, 2], [1, 1, 2, 0]) == 0.5


# -- loading and splits -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def task_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tasks")
    for name in TASKS:
        fixtures.write_task_files(name, root / name, n_per_split=12, seed=3)
    return root


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_task_loads_from_local_files(task, task_dirs, tmp_path):
    spec = get_task(task)
    for split in (spec.train_split, spec.eval_split):
        rows = [json.loads(x) for x in (task_dirs / task / f"{split}.jsonl").read_text().splitlines()]
        assert set(spec.columns) <= set(rows[0])
        samples = data.load_examples(spec, split, data_dir=task_dirs / task, cache_dir=tmp_path)
        assert len(samples) == 12
        assert samples[3].uid == f"{task}/{split}/3"
        assert samples[3] == replace(spec.to_sample(rows[3]), uid=f"{task}/{split}/3")
        prompt = spec.encode(samples[0])
        assert isinstance(prompt, str) and prompt
        if spec.is_generation:
            assert samples[0].golds[0] in samples[0].fields["context"]
        else:
            assert 0 <= samples[0].correct < len(samples[0].candidates)


def test_local_file_errors_are_user_errors(tmp_path):
    spec = get_task("qqp")
    with pytest.raises(UserError, match="no file .*train.jsonl"):
        data.load_examples(spec, "train", data_dir=tmp_path)
    (tmp_path / "train.jsonl").write_text(json.dumps({"question1": "a", "label": 1}) + "\n")
    with pytest.raises(UserError, match="lacks column.*question2"):
        data.load_examples(spec, "train", data_dir=tmp_path, cache_dir=tmp_path / "c")


def test_offline_hub_failure_is_fast_and_names_the_dataset(tmp_path):
    """A fresh interpreter, offline, with an empty HF_HOME: one-line UserError within 5 s."""
    code = textwrap.dedent("""
        import time
        from hiso.errors import UserError
        from hiso.text.data import load_examples
        from hiso.text.templates import get_task
        import datasets  # import cost is not part of the budget
        t = time.perf_counter()
        try:
            load_examples(get_task("sst2"), "train")
        except UserError as e:
            print(f"{time.perf_counter() - t:.3f}")
            print(e)
    """)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1"}
    env.pop("HF_DATASETS_CACHE", None)
    env.pop("HF_HUB_CACHE", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=60)
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2, out.stdout + out.stderr
    assert float(lines[0]) < 5.0
    message = lines[1]
    assert message.startswith("task sst2: cannot load dataset nyu-mll/glue (config sst2) split train")
    assert "HF_HOME" in message and "data_dir" in message


def _fake_samples(n: int, tag: str) -> list[Sample]:
    return [Sample(fields={"x": str(i)}, candidates=("a", "b"), correct=i % 2, uid=f"{tag}/{i}")
            for i in range(n)]


def test_make_splits_disjoint_fixed_and_deterministic():
    train, val = _fake_samples(50, "train"), _fake_samples(20, "validation")
    a = data.make_splits(train, 30, 10, 15, seed=4, eval_examples=val)
    b = data.make_splits(train, 30, 10, 15, seed=4, eval_examples=val)
    c = data.make_splits(train, 30, 10, 15, seed=5, eval_examples=val)
    assert (len(a.train), len(a.dev), len(a.eval)) == (30, 10, 15)
    uids = lambda xs: [s.uid for s in xs]  # noqa: E731
    assert uids(a.train) == uids(b.train) and uids(a.eval) == uids(b.eval)
    assert uids(a.train) != uids(c.train)
    assert not set(uids(a.train)) & set(uids(a.dev))
    assert all(u.startswith("validation/") for u in uids(a.eval))
    assert all(u.startswith("train/") for u in uids(a.train) + uids(a.dev))
    # one pool: three disjoint draws; None = the rest
    d = data.make_splits(train, 20, 10, None, seed=0)
    assert len(d.eval) == 20
    assert len(set(uids(d.train)) | set(uids(d.dev)) | set(uids(d.eval))) == 50
    with pytest.raises(UserError, match="asked for 61 examples but only 50"):
        data.make_splits(train, 51, 10, 5, seed=0, eval_examples=val)


def test_load_splits_synthetic_without_any_file():
    spec = get_task("synthetic")
    s = data.load_splits(spec, 100, 20, 50, seed=0)
    assert (len(s.train), len(s.dev), len(s.eval)) == (100, 20, 50)
    assert all("/validation/" in x.uid for x in s.eval)
    for x in s.train + s.eval:
        assert synthetic.keyword_label(x.fields["sentence"]) == x.correct
    labels = [x.correct for x in data.load_examples(spec, "train")]
    assert len(labels) == 2000 and 0.45 < sum(labels) / len(labels) < 0.55
    assert synthetic.synthetic_rows(5, 1) == synthetic.synthetic_rows(5, 1)
    assert synthetic.synthetic_rows(5, 1) != synthetic.synthetic_rows(5, 2)


# -- tiny OPT fixtures ------------------------------------------------------------------------
EXTRA_TEXT = "the cat sat on a mat dog Answer : Title Context Question It was terrible great"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, task_dirs):
    texts = [EXTRA_TEXT]
    for name, spec in TASKS.items():
        for s in data.load_examples(spec, "train", data_dir=task_dirs / name,
                                    cache_dir=tmp_path_factory.mktemp("c")):
            texts += [spec.encode(s), *(s.candidates or ()), *s.golds]
    path = tmp_path_factory.mktemp("tiny_opt")
    tok = fixtures.build_tiny_tokenizer(fixtures.words_in(texts))
    model = fixtures.build_tiny_opt(tok, path, seed=0)
    return tok, model, path


def test_tiny_opt_round_trip(tiny):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok, model, path = tiny
    tok2 = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    model2 = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=False).eval()
    text = "the cat sat on a mat"
    ids = tok(text)["input_ids"]
    assert ids == tok2(text)["input_ids"]
    assert ids[0] == tok.eos_token_id == tok2.bos_token_id  # OPT-style leading </s>
    assert tok2.pad_token_id == 0 and tok2.unk_token_id == 2 and len(tok2) == len(tok)
    assert tok2("zebra", add_special_tokens=False)["input_ids"] == [tok2.unk_token_id]
    assert model2.config.vocab_size == len(tok) and model2.config.hidden_size == 32
    assert sum(p.numel() for p in model2.parameters()) == sum(p.numel() for p in model.parameters())
    x = torch.tensor([ids])
    with torch.no_grad():
        assert torch.equal(model(x).logits, model2(x).logits)
    again = fixtures.build_tiny_opt(tok, None, seed=0)
    other = fixtures.build_tiny_opt(tok, None, seed=1)
    w = lambda m: m.model.decoder.embed_tokens.weight  # noqa: E731
    assert torch.equal(w(again), w(model)) and not torch.equal(w(other), w(model))


def brute_force_mean_logprob(model, tok, prompt: str, cand: str, eos: bool = False) -> float:
    """Unpadded sequence, full logits, full log_softmax: the definition, spelled out."""
    p = tok(prompt)["input_ids"]
    c = tok(cand, add_special_tokens=False)["input_ids"] + ([tok.eos_token_id] if eos else [])
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([p + c])).logits[0].double(), -1)
    return sum(logp[len(p) + j - 1, t].item() for j, t in enumerate(c)) / len(c)


def test_length_normalised_scores_equal_brute_force(tiny):
    tok, model, _ = tiny
    # continuations carry their own leading space (the verbaliser convention): the joint text
    prompts = ["the cat sat on", "Answer : the dog", "mat"]
    cands = [[" a mat", " the", " dog sat on a mat"], [" great", "\nterrible"], [" cat", " sat on"]]
    batch = scoring.encode_pairs(tok, prompts, cands, correct=[2, 0, 1])
    seen = []
    hook = model.lm_head.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape)))
    try:
        with torch.no_grad():
            scores = scoring.candidate_scores(model, batch)
    finally:
        hook.remove()
    # the longest candidate has K = 5 tokens: the vocabulary projection ran on K+1 positions only
    assert batch.targets.shape[1] == 5 and batch.input_ids.shape[1] > 6
    assert seen == [(7, 6, len(tok))]  # 3 + 2 + 2 (prompt, candidate) rows
    assert scores.shape == (3, 3) and scores[1, 2] == float("-inf") and scores[2, 2] == float("-inf")
    for s, (p, cs) in enumerate(zip(prompts, cands)):
        for c, cand in enumerate(cs):
            expected = brute_force_mean_logprob(model, tok, p, cand)
            assert scores[s, c].item() == pytest.approx(expected, abs=1e-5)
    # a plain callable returning full logits gives the same scores
    full = lambda ids, mask: model(input_ids=ids, attention_mask=mask,  # noqa: E731
                                   position_ids=scoring.positions_from_mask(mask)).logits
    with torch.no_grad():
        assert torch.allclose(scoring.candidate_scores(full, batch), scores, atol=1e-6)
    loss = scoring.classification_loss(scores, batch.correct)
    manual = -sum(torch.log_softmax(scores[i, : len(cs)], -1)[y]
                  for i, (cs, y) in enumerate(zip(cands, [2, 0, 1]))) / 3
    assert loss.item() == pytest.approx(manual.item(), abs=1e-6)


def test_task_samples_score_like_brute_force_and_truncate(tiny, task_dirs, tmp_path):
    tok, model, _ = tiny
    spec = get_task("cb")
    samples = data.load_examples(spec, "validation", data_dir=task_dirs / "cb", cache_dir=tmp_path)[:4]
    batch = scoring.encode_samples(spec, tok, samples)
    with torch.no_grad():
        scores = scoring.candidate_scores(model, batch)
    assert scores.shape == (4, 3)
    for i, s in enumerate(samples):
        for c, cand in enumerate(s.candidates):
            assert scores[i, c].item() == pytest.approx(
                brute_force_mean_logprob(model, tok, spec.encode(s), cand), abs=1e-5)
    short = scoring.encode_samples(spec, tok, samples, max_length=10)
    assert short.input_ids.shape[1] == 10
    assert (short.input_ids[:, 0] == tok.eos_token_id).all()  # BOS kept when cutting from the left


def test_cb_three_way_prediction_with_designed_logits(tiny):
    """A fake model that makes "Maybe" most likely: scored, predicted and lost exactly."""
    tok, _, _ = tiny
    spec = get_task("cb")
    sample = spec.to_sample({"premise": "the cat sat .", "hypothesis": "a dog sat .", "label": 2})
    maybe = tok.convert_tokens_to_ids("Maybe")
    vocab = len(tok)

    def fake(input_ids, attention_mask):
        logits = torch.zeros(*input_ids.shape, vocab)
        logits[..., maybe] = 5.0
        return logits

    batch = scoring.encode_samples(spec, tok, [sample])
    scores = scoring.candidate_scores(fake, batch)
    log_z = math.log(vocab - 1 + math.exp(5.0))
    assert scores[0].tolist() == pytest.approx([-log_z, -log_z, 5.0 - log_z])
    assert scoring.predict(scores).tolist() == [2]
    assert scoring.task_loss(fake, batch).item() == pytest.approx(math.log(1 + 2 * math.exp(-5)))
    wrong = scoring.encode_samples(spec, tok, [spec.to_sample({**sample.fields, "label": 0})])
    assert scoring.task_loss(fake, wrong).item() == pytest.approx(math.log(2 + math.exp(5)))


def test_generation_loss_equals_manual_cross_entropy(tiny, task_dirs, tmp_path):
    tok, model, _ = tiny
    spec = get_task("squad")
    samples = data.load_examples(spec, "train", data_dir=task_dirs / "squad", cache_dir=tmp_path)[:3]
    batch = scoring.encode_samples(spec, tok, samples)
    assert batch.generation
    with torch.no_grad():
        loss = scoring.task_loss(model, batch).item()
    total, count = 0.0, 0
    for s in samples:
        n = len(tok(spec.target(s), add_special_tokens=False)["input_ids"]) + 1
        total += brute_force_mean_logprob(model, tok, spec.encode(s), spec.target(s), eos=True) * n
        count += n
    assert loss == pytest.approx(-total / count, abs=1e-5)


def test_greedy_generation_cached_uncached_and_brute_force_agree(tiny):
    tok, base, _ = tiny
    model = copy.deepcopy(base)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # larger weights than the init, so greedy outputs vary token to token
        for p in model.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=gen))
    prompts = ["Title : cat Context : the cat sat Question : Answer :", "the dog"]
    fed = []  # tokens per row fed to each forward: the cache must really be used
    hook = model.register_forward_pre_hook(
        lambda mod, args, kwargs: fed.append(kwargs["input_ids"].shape[1]), with_kwargs=True)
    cached = scoring.greedy_generate(model, tok, prompts, max_new_tokens=6, use_cache=True)
    auto = scoring.greedy_generate(model, tok, prompts, max_new_tokens=6)
    n_cached = len(fed) // 2
    assert len(fed) == 2 * n_cached and n_cached >= 2
    assert fed[1:n_cached] == [1] * (n_cached - 1)  # after the prompt, one new token per step
    assert fed[n_cached + 1:] == [1] * (n_cached - 1)  # use_cache=None finds the cache too
    fed.clear()
    plain = scoring.greedy_generate(model, tok, prompts, max_new_tokens=6, use_cache=False)
    hook.remove()
    assert fed == [fed[0] + i for i in range(len(fed))]  # a full forward per step
    assert cached == plain == auto
    for prompt, answer in zip(prompts, cached):
        ids = tok(prompt)["input_ids"]
        out = []
        with torch.no_grad():
            for _ in range(6):
                nxt = int(model(torch.tensor([ids + out])).logits[0, -1].argmax())
                if nxt == tok.eos_token_id:
                    break
                out.append(nxt)
        assert answer == tok.decode(out, skip_special_tokens=True).strip()
    assert any(len(set(a.split())) >= 2 for a in cached), cached  # a non-trivial continuation


def test_greedy_generation_stops_at_eos_and_newline(tiny):
    tok, _, _ = tiny
    vocab = len(tok)
    river, stone, colon = (tok.convert_tokens_to_ids(w) for w in ("river", "stone", ":"))
    follow = {colon: river, river: stone, stone: tok.eos_token_id}

    def fake(input_ids, attention_mask):
        logits = torch.zeros(*input_ids.shape, vocab)
        for b in range(input_ids.shape[0]):
            logits[b, -1, follow.get(int(input_ids[b, -1]), river)] = 1.0
        return logits

    out = scoring.greedy_generate(fake, tok, ["Answer :", "the cat stone"], max_new_tokens=5)
    assert out == ["river stone", ""]
    assert metrics.squad_f1(out[0], ["the river stone"]) == 1.0
    # a stop string cuts the answer even without EOS
    out = scoring.greedy_generate(fake, tok, ["Answer :"], max_new_tokens=5, stop=("stone",))
    assert out == ["river"]


def test_evaluate_samples_matches_direct_scoring(tiny, task_dirs, tmp_path):
    tok, model, _ = tiny
    spec = get_task("synthetic")
    samples = data.load_examples(spec, "validation")[:20]
    with torch.no_grad():
        scores = scoring.candidate_scores(model, scoring.encode_samples(spec, tok, samples))
    expected = (scores.argmax(-1) == torch.tensor([s.correct for s in samples])).float().mean()
    got = scoring.evaluate_samples(model, tok, spec, samples, batch_size=6)
    assert got == {"accuracy": pytest.approx(expected.item())}
    squad = get_task("squad")
    qs = data.load_examples(squad, "validation", data_dir=task_dirs / "squad", cache_dir=tmp_path)[:5]
    answers = scoring.greedy_generate(model, tok, [squad.encode(s) for s in qs], 4)
    res = scoring.evaluate_samples(model, tok, squad, qs, batch_size=2, max_new_tokens=4)
    assert res == pytest.approx(metrics.mean_squad(answers, [s.golds for s in qs]))


class _Out(dict):
    __getattr__ = dict.__getitem__


class _KwargsOnlyLM(torch.nn.Module):
    """An HF-like model whose forward names nothing but input_ids/attention_mask (as a future
    transformers might): position ids and the cache travel in ``**kwargs``. Its next token is
    (token + position) mod V, so a dropped ``position_ids`` changes the answer of padded rows."""

    def __init__(self, vocab: int, cache_name: str):
        super().__init__()
        self.vocab, self.cache_name, self.w = vocab, cache_name, torch.nn.Parameter(torch.zeros(1))
        self.calls = []

    def can_generate(self) -> bool:
        return True

    def forward(self, input_ids, attention_mask=None, **kwargs):
        self.calls.append(sorted(kwargs))
        pos = kwargs.get("position_ids")
        if pos is None:  # the HF default: count from the first (possibly padded) column
            pos = torch.arange(input_ids.shape[1]).expand_as(input_ids)
        logits = torch.nn.functional.one_hot((input_ids + pos) % self.vocab, self.vocab).float()
        out = _Out(logits=logits)
        if kwargs.get("use_cache"):
            out[self.cache_name] = ("seen", attention_mask.shape[1])
        return out


@pytest.mark.parametrize("cache_name", ["cache", "past_key_values"])
def test_generation_and_scoring_pass_position_ids_through_kwargs(tiny, cache_name):
    tok, _, _ = tiny
    model = _KwargsOnlyLM(len(tok), cache_name)
    prompts = ["the cat sat on the", "the dog"]  # rows of different length: left padding
    cached = scoring.greedy_generate(model, tok, prompts, max_new_tokens=3, stop=())
    assert len(model.calls) == 3 and model.calls[0] == ["logits_to_keep", "position_ids", "use_cache"]
    assert all(c == sorted([cache_name, "logits_to_keep", "position_ids", "use_cache"])
               for c in model.calls[1:])  # the cache goes back under the name it came by
    model.calls.clear()
    plain = scoring.greedy_generate(model, tok, prompts, max_new_tokens=3, stop=(), use_cache=False)
    assert cached == plain
    assert all("position_ids" in c for c in model.calls)
    # brute force, one unpadded row at a time: the padded batch must give the same answers
    for prompt, answer in zip(prompts, plain):
        ids = tok(prompt)["input_ids"]
        out = []
        for _ in range(3):
            nxt = (ids + out)[-1] + len(ids + out) - 1
            out.append(nxt % len(tok))
        assert answer == tok.decode(out, skip_special_tokens=True).strip()


def test_plain_callable_cannot_be_asked_for_a_cache(tiny):
    tok, _, _ = tiny
    with pytest.raises(ValueError, match="Hugging Face model"):
        scoring.greedy_generate(lambda i, m: torch.zeros(*i.shape, len(tok)), tok, ["a"], 2,
                                use_cache=True)
