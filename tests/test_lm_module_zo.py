"""On-the-fly perturbed forwards (hiso.module_zo) on tiny OPT / Llama / Qwen2 models."""

from __future__ import annotations

import pytest
import torch

from hiso.directions import DirectionSampler
from hiso.module_zo import FunctionalModule, _Pool
from hiso.text import fixtures
from hiso.zo import Perturbation, PerturbBuffer, params_sha256


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tok():
    return fixtures.build_tiny_tokenizer(fixtures.WORD_BANK)


def make(kind: str, tok=None, seed: int = 0, tied: bool = True):
    if kind == "opt":
        return fixtures.build_tiny_opt(tok, None, seed=seed)
    if kind == "gemma3":  # a scaled word embedding: the lookup times sqrt(hidden)
        from transformers import Gemma3ForCausalLM, Gemma3TextConfig

        config = Gemma3TextConfig(vocab_size=40, hidden_size=32, intermediate_size=64,
                                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                  head_dim=8, max_position_embeddings=64, sliding_window=4)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return Gemma3ForCausalLM(config).eval()
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    cls, cfg = (LlamaForCausalLM, LlamaConfig) if kind == "llama" else (Qwen2ForCausalLM, Qwen2Config)
    config = cfg(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                 tie_word_embeddings=tied)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(config).eval()


def in_fm_order(named: dict, fm: FunctionalModule) -> list:
    """Tensors by parameter name in the functional module's order (chunks as row views)."""
    out = []
    for n in fm.names:
        base, _, rows = n.partition("[")
        t = named[base]
        if rows:
            a, b = (int(x) for x in rows.rstrip("]").split(":"))
            t = t[a:b]
        out.append(t)
    return out


def reference_list(ref, fm: FunctionalModule):
    """The reference model's tensors in the functional module's order."""
    return in_fm_order({n: p.data for n, p in ref.named_parameters()}, fm)


def reference_grads(ref, loss, fm: FunctionalModule):
    """d loss / d (reference model's parameters), in the functional module's order."""
    names = [n for n, _ in ref.named_parameters()]
    return in_fm_order(dict(zip(names, torch.autograd.grad(loss, list(ref.parameters())))), fm)


def inputs(vocab: int):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, vocab, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[0, :4] = 0  # a left-padded row
    return dict(input_ids=ids, attention_mask=mask)


def logits(model, x):
    with torch.no_grad():
        return model(**x).logits


@pytest.mark.parametrize("directions", ["gaussian", "rademacher_bits"])
@pytest.mark.parametrize("kind", ["opt", "llama", "qwen2"])
def test_forward_equals_the_plain_model_and_perturbed_equals_perturb_buffer(kind, directions, tok):
    """Unchunked: bit-identical to the module with its own weights, and to in-place x + mu z."""
    ref, model = make(kind, tok), make(kind, tok)
    fm = FunctionalModule(model, chunk_numel=None)
    params = fm.take_initial()
    x = inputs(ref.config.vocab_size)
    with fm.bind(params) as m:
        assert torch.equal(logits(m, x), logits(ref, x))
    H = [torch.rand_like(p).add_(0.5) for p in params]
    pert = Perturbation(123, 1e-2, DirectionSampler(directions), H)
    with torch.no_grad(), PerturbBuffer().perturbed(reference_list(ref, fm), pert):
        want = logits(ref, x)
    with torch.no_grad(), fm.bind(params, pert) as m:
        got = logits(m, x)
    assert torch.equal(got, want)
    assert not torch.equal(got, logits(ref, x))  # the perturbation did something
    assert len(fm.tied) == 1  # embed_tokens / lm_head: one master, one perturbation


@pytest.mark.parametrize("kind", ["opt", "llama", "gemma3"])
def test_chunked_vocabulary_matrix_is_one_tie_and_matches_reference(kind, tok):
    ref, model = make(kind, tok), make(kind, tok)
    fm = FunctionalModule(model, chunk_numel=100)
    params = fm.take_initial()
    chunks = [n for n in fm.names if "[" in n]
    assert len(chunks) >= 3 and not fm.tied  # the tied matrix became row chunks, once
    vocab_rows = sum(params[i].shape[0] for i, n in enumerate(fm.names) if "[" in n)
    assert vocab_rows == ref.config.vocab_size
    x = inputs(ref.config.vocab_size)
    pert = Perturbation(5, 1e-2, DirectionSampler(), None)
    with torch.no_grad(), PerturbBuffer().perturbed(reference_list(ref, fm), pert):
        want = logits(ref, x)
    with torch.no_grad(), fm.bind(params, pert) as m:
        got = logits(m, x)
        again = logits(m, x)
    assert torch.equal(got, again)  # deterministic
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)  # only summation blocking differs
    with fm.bind(params) as m:
        torch.testing.assert_close(logits(m, x), logits(ref, x), rtol=0, atol=1e-5)


def test_thread_count_does_not_change_values(tok):
    a = FunctionalModule(make("opt", tok), workers=1, chunk_numel=200)
    b = FunctionalModule(make("opt", tok), workers=2, chunk_numel=200)
    pa, pb = a.take_initial(), b.take_initial()
    x = inputs(len(tok))
    pert = Perturbation(9, 1e-3, DirectionSampler(), None)
    with torch.no_grad(), a.bind(pa, pert) as ma:
        la = logits(ma, x)
    with torch.no_grad(), b.bind(pb, pert) as mb:
        lb = logits(mb, x)
    b.close()
    assert torch.equal(la, lb)


def test_bf16_forward_1000_cycles_leave_fp32_masters_bit_identical(tok):
    model = make("opt", tok)
    fm = FunctionalModule(model, forward_dtype=torch.bfloat16, chunk_numel=200)
    params = fm.take_initial()
    before = params_sha256(params)
    assert all(p.dtype == torch.float32 for p in params)
    x = inputs(len(tok))
    sampler = DirectionSampler()
    losses = set()
    with torch.no_grad():
        for k in range(1000):
            with fm.bind(params, Perturbation(k, 1e-3, sampler, None)) as m:
                out = m(**x).logits
            if k < 5:
                assert out.dtype == torch.bfloat16 and bool(torch.isfinite(out).all())
                losses.add(float(out.float().sum()))
    assert params_sha256(params) == before
    assert len(losses) == 5  # every cycle really was perturbed
    allocations = fm.pool_allocations
    with torch.no_grad(), fm.bind(params, Perturbation(1, 1e-3, sampler, None)) as m:
        m(**x)
    assert fm.pool_allocations == allocations  # buffers are recycled, not re-allocated


def test_bf16_weights_are_the_fp32_perturbed_weights_cast(tok):
    """The forward sees cast(x + mu z) computed in fp32: never a low-precision perturbation."""
    import copy

    ref, model = make("opt", tok), make("opt", tok)
    fm = FunctionalModule(model, forward_dtype=torch.bfloat16, chunk_numel=None)
    params = fm.take_initial()
    x = inputs(len(tok))
    pert = Perturbation(11, 1e-2, DirectionSampler(), None)
    with torch.no_grad(), PerturbBuffer().perturbed(reference_list(ref, fm), pert):
        cast = copy.deepcopy(ref).to(torch.bfloat16)
    with torch.no_grad(), fm.bind(params, pert) as m:
        assert torch.equal(logits(m, x), logits(cast, x))


def test_placeholders_outside_bind_and_masters_untouched(tok):
    model = make("opt", tok)
    fm = FunctionalModule(model)
    params = fm.take_initial()
    snapshot = [p.clone() for p in params]
    x = inputs(len(tok))
    with pytest.raises(RuntimeError, match="bind"):
        logits(model, x)
    assert model.dtype == torch.float32
    with torch.no_grad(), fm.bind(params, Perturbation(3, 0.1, DirectionSampler(), None)) as m:
        logits(m, x)
    assert all(torch.equal(a, b) for a, b in zip(params, snapshot))
    assert all(bool(torch.isnan(p).all()) for p in model.parameters())  # only placeholders left
    with pytest.raises(RuntimeError, match="handed over"):
        fm.take_initial()


def test_gradients_flow_into_the_masters(tok):
    ref, model = make("opt", tok), make("opt", tok)
    fm = FunctionalModule(model, chunk_numel=100)
    params = [p.detach().requires_grad_(True) for p in fm.take_initial()]
    x = inputs(len(tok))
    with fm.bind(params) as m:
        loss = m(**x).logits.logsumexp(-1).mean()
    grads = torch.autograd.grad(loss, params)
    wanted = reference_grads(ref, ref(**x).logits.logsumexp(-1).mean(), fm)
    for g, want in zip(grads, wanted):
        torch.testing.assert_close(g, want, rtol=1e-4, atol=1e-6)


def test_trainable_subset_keeps_the_rest_frozen(tok):
    ref, model = make("opt", tok), make("opt", tok)
    fm = FunctionalModule(model, trainable=lambda n: "layer_norm" in n or n.endswith("bias"))
    params = fm.take_initial()
    assert fm.names and all(("layer_norm" in n or n.endswith("bias")) for n in fm.names)
    x = inputs(len(tok))
    with fm.bind(params) as m:
        assert torch.equal(logits(m, x), logits(ref, x))


def test_pool_does_not_recycle_an_aliased_buffer():
    pool = _Pool(torch.device("cpu"))
    t, token = pool.take((4, 4), torch.float32)
    view = t[1:3]
    pool.give(t, token)
    again, _ = pool.take((4, 4), torch.float32)
    assert again is not t and pool.allocations == 2
    del view
    pool.give(again, _)
    assert pool.take((4, 4), torch.float32)[0] is again


def test_embedding_builds_only_the_chunks_its_tokens_live_in(tok, monkeypatch):
    model = make("opt", tok)
    fm = FunctionalModule(model, chunk_numel=96)  # 3 vocabulary rows per chunk
    params = fm.take_initial()
    chunks = {i for i, n in enumerate(fm.names) if "embed_tokens" in n}
    built = []
    original = FunctionalModule._make

    def counting(self, i, *args):
        built.append(i)
        return original(self, i, *args)

    monkeypatch.setattr(FunctionalModule, "_make", counting)
    ids = torch.tensor([[1, 2, 2, 1]])  # rows 0-2: chunk 0 only
    with torch.no_grad(), fm.bind(params, Perturbation(1, 1e-3, DirectionSampler(), None)) as m:
        m(input_ids=ids, attention_mask=torch.ones_like(ids))
    per_chunk = {i: built.count(i) for i in chunks}
    first = min(chunks)
    assert per_chunk[first] == 2  # the lookup and the output layer
    assert all(n == 1 for i, n in per_chunk.items() if i != first)  # the output layer only


@pytest.mark.parametrize("method", ["fedavg", "fedadam"])
def test_first_order_step_on_untied_chunked_vocabulary(method):
    """An untied embedding's chunks that hold none of the batch's tokens get gradient zero (they
    are never built, so autograd never sees them); the step runs and equals plain autograd."""
    from hiso.baselines import VECTOR_METHODS
    from hiso.tasks.base import Task

    ref, model = make("llama", tied=False), make("llama", tied=False)
    fm = FunctionalModule(model, chunk_numel=96)  # 3 rows per chunk
    params = fm.take_initial()
    ids = torch.tensor([[1, 2, 2, 1]])  # embedding rows 0-2: one chunk of 14

    class LM(Task):
        def batch_loss(self, params, batch):
            with fm.bind(params) as m:
                return m(input_ids=batch).logits.logsumexp(-1).mean()

    task = LM(None, 1, 0)
    loss, grads = task.loss_and_grad(params, ids)
    ref_loss = ref(input_ids=ids).logits.logsumexp(-1).mean()
    assert loss == pytest.approx(float(ref_loss.detach()), abs=1e-6)
    for g, want in zip(grads, reference_grads(ref, ref_loss, fm)):
        torch.testing.assert_close(g, want, rtol=1e-4, atol=1e-6)
    untouched = [n for n, g in zip(fm.names, grads) if "embed_tokens" in n and not bool(g.any())]
    assert len(untouched) == 13
    cls = VECTOR_METHODS[method]
    before = [p.clone() for p in params]
    cls(cls.Config(lr=0.1), DirectionSampler()).local_step(task, params, ids, seed=0)
    assert any(not torch.equal(a, b) for a, b in zip(params, before))
