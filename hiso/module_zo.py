"""Run an ``nn.Module`` with weights taken from external float32 master tensors, perturbed on the
fly one block at a time.

Why: the protocol owns the parameters (the server's list; a work copy when tau > 1; per-client
lists in faithful mode), so a task must evaluate "the model with weights = params (+ mu z)"
without assuming the module holds those tensors, and without ever writing to the masters:

* Every trainable parameter slot of the module holds a *placeholder* outside a forward: a
  zero-stride NaN tensor of the right shape, dtype and device (so ``model.dtype``/``device``
  still answer correctly, and any use of a weight outside its block gives a NaN loss rather than
  a silently wrong one). The module's own weights are handed over as the masters; no second copy
  is kept. Its ``save_pretrained``, ``push_to_hub`` and ``state_dict`` raise (they would write
  NaN in every trainable tensor): ``hiso export`` writes a real model from the masters.
* Inside ``with fm.bind(params, pert):`` a forward pre-hook on each *unit* (every module that
  owns parameters; with ``workers > 1``, every child of an ``nn.ModuleList``, i.e. each
  transformer block, so that its tensors can be drawn concurrently) builds that unit's weights
  right before it runs: ``params[i] + pert.delta(i)`` in float32, exactly the tensor
  ``zo.PerturbBuffer`` would produce, then cast to the forward dtype. The forward hook puts the
  placeholders back and recycles the buffers, so at most one layer's (one block's) perturbed
  weights exist at a time. Without ``pert`` (fp32) the masters are used directly:
  the unperturbed forward costs nothing extra, and autograd flows into ``params``.
* Large embedding / output matrices outside the blocks (the vocabulary matrix: 31% of OPT-125M)
  are split row-wise into master *chunks* of at most ``chunk_numel`` elements, each its own
  tensor in the list (so its own direction stream, its own H slice, its own update). Their
  ``nn.Embedding`` / ``nn.Linear`` modules run chunk by chunk, building one perturbed chunk at a
  time. So no party ever materialises a vocabulary-sized temporary: not the forward, not the
  optimisers' per-tensor updates (which is where 3-4 such temporaries would otherwise appear).
* Tied weights (OPT's embed_tokens / lm_head) are one master (the first occurrence in
  ``named_parameters`` order, which de-duplicates ties), so a tie always sees one consistent
  perturbation. A chunked tie rebuilds its chunks where each module uses them (the same values);
  a small unchunked tie is built once per forward and shared.
* Buffers are recycled, not re-allocated: a fresh large tensor per forward costs page faults
  comparable to drawing its random numbers. A buffer is reused only when nothing else still
  references its storage (a module that returned a view of its weight keeps the buffer alive).
* Optional ``workers > 1``: a unit's tensors are drawn by that many threads (the seeded CPU
  normal generator is single-threaded; each tensor has its own stream, so the values do not
  depend on the thread count).

The master list's order is ``named_parameters()`` order restricted to the trainable names, with
a chunked tensor replaced by its chunks in row order; index ``i`` names the direction stream of
entry ``i`` for every party (``names[i]`` says which, e.g. ``...embed_tokens.weight[0:5461]``).
"""

from __future__ import annotations

import bisect
import contextlib
import threading
import types
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F
from torch import nn

from .directions import DirectionSampler
from .zo import Params, Perturbation

Slot = tuple[nn.Module, str, int]  # (owning module, attribute, master index)
DEFAULT_CHUNK_NUMEL = 1 << 20  # 1M elements: 4 MB in float32
SCRATCH_NUMEL = 1 << 20        # the rsqrt(H) scratch of a perturbation


def return_large_frees_to_os(threshold: int = 4 << 20) -> bool:
    """Ask glibc to serve (and unmap on free) every allocation >= ``threshold`` bytes directly.

    Why: a step frees and re-allocates many tensors of 4-16 MB (activations, per-tensor
    temporaries of the optimisers' updates). glibc's default raises its mmap threshold to the
    largest size freed so far (up to 32 MB), so those blocks end up in heaps that keep the
    memory after it is freed: about 150 MB of peak RSS at OPT-125M, all of it dead. A fixed
    threshold unmaps them on free. Process-wide, Linux/glibc only (a no-op elsewhere); returns
    whether the setting was applied.
    """
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-3, int(threshold)))  # -3: M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


@contextlib.contextmanager
def _serial_ops(enabled: bool = True) -> Iterator[None]:
    """Run the enclosed torch ops on the calling thread alone.

    Why: building a perturbation is ~6 elementwise ops per tensor, ~900 multi-threaded ops per
    sweep at OPT-125M. Each one is a parallel region that waits for its slowest thread, and on a
    busy machine a descheduled thread costs milliseconds: measured, sweeps then cost more than
    the forward itself. The generator is single-threaded anyway; parallelism, when wanted, comes
    from ``workers`` (independent tensors on plain threads, one join per block).
    """
    n = torch.get_num_threads()
    if not enabled or n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _storage_uses(t: torch.Tensor) -> int | None:
    fn = getattr(torch._C, "_storage_Use_Count", None)
    if fn is None:
        return None
    try:
        return int(fn(t.untyped_storage()._cdata))
    except Exception:
        return None


class _Pool:
    """Reusable tensors keyed by (number of elements, dtype), reshaped in place on reuse (so
    fc1's and fc2's transposed shapes share buffers); recycled only when unaliased."""

    def __init__(self, device: torch.device):
        self.device = device
        self._free: dict[tuple, list[tuple[torch.Tensor, int | None]]] = {}
        self._lock = threading.Lock()
        self.allocations = 0  # fresh tensors made so far (tests, benchmarks)

    def take(self, shape: torch.Size, dtype: torch.dtype) -> tuple[torch.Tensor, int | None]:
        numel = 1
        for n in shape:
            numel *= int(n)
        with self._lock:
            free = self._free.get((numel, dtype))
            if free:
                t, token = free.pop()
                if t.shape != shape:  # same storage, new shape; same tensor object
                    t.set_(t.untyped_storage(), 0, shape)
                return t, token
            self.allocations += 1
        t = torch.empty(shape, dtype=dtype, device=self.device)
        return t, _storage_uses(t)

    def give(self, t: torch.Tensor, uses) -> None:
        """Recycle ``t`` if ``uses`` is a pool token and nothing else holds its storage."""
        if uses is None or uses is False or _storage_uses(t) != uses:
            return
        with self._lock:
            self._free.setdefault((t.numel(), t.dtype), []).append((t, uses))

    def clear(self) -> None:
        with self._lock:
            self._free.clear()


def _scale_of(mod: nn.Embedding, dtype: torch.dtype):
    scale = mod.embed_scale
    return scale.to(dtype) if isinstance(scale, torch.Tensor) else scale


def _is_scaled_embedding(mod: nn.Embedding) -> bool:
    """A word embedding whose forward is the lookup times ``embed_scale`` (Gemma-3's
    ``Gemma3TextScaledWordEmbedding``, sqrt(hidden) x the row). Checked on the module's own
    weights, so a subclass that computes anything else keeps its forward (and stays unchunked)."""
    if not type(mod).__name__.endswith("ScaledWordEmbedding") or not hasattr(mod, "embed_scale"):
        return False
    ids = torch.arange(min(8, mod.num_embeddings), device=mod.weight.device)
    with torch.no_grad():
        want = F.embedding(ids, mod.weight, mod.padding_idx) * _scale_of(mod, mod.weight.dtype)
        return torch.equal(mod(ids), want)


PLACEHOLDER_DUMP = ("this module holds NaN placeholders, not its weights (hiso.module_zo): "
                    "{what} would write NaN in every trainable tensor. The weights are the master "
                    "list; write a model with `hiso export RUN_DIR --out DIR`")


def _refuse_weight_dumps(model: nn.Module) -> None:
    """Make the module's own ways of writing its weights raise: outside a forward every
    trainable slot is a placeholder, so they would silently write a NaN model."""
    for what in ("save_pretrained", "push_to_hub", "state_dict"):
        if hasattr(model, what):
            def refuse(*args, _what=what, **kwargs):
                raise RuntimeError(PLACEHOLDER_DUMP.format(what=_what))
            object.__setattr__(model, what, refuse)


def _units(model: nn.Module) -> dict[str, nn.Module]:
    """Children of every ModuleList (the outermost ones), by qualified name."""
    out: dict[str, nn.Module] = {}
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList):
            for child_name, child in mod.named_children():
                q = f"{name}.{child_name}" if name else child_name
                if not any(q == u or q.startswith(u + ".") for u in out):
                    out[q] = child
    return out


def _unit_of(module_name: str, units: dict[str, nn.Module]) -> str | None:
    for u in units:
        if module_name == u or module_name.startswith(u + "."):
            return u
    return None


class FunctionalModule:
    """See the module docstring. ``model`` is taken over: its trainable weights become the
    masters returned once by :meth:`take_initial`; its slots hold placeholders afterwards."""

    def __init__(self, model: nn.Module, trainable: Callable[[str], bool] | None = None,
                 forward_dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                 workers: int = 1, chunk_numel: int | None = DEFAULT_CHUNK_NUMEL):
        self.module = model.eval()
        self.dtype = forward_dtype
        self.device = torch.device(device)
        self.workers = max(1, int(workers))
        trainable = trainable or (lambda name: True)
        units = _units(model)

        # which modules use each parameter (ties included), and where
        users: dict[int, list[tuple[str, nn.Module, str]]] = {}
        seen: set[int] = set()
        for mname, mod in model.named_modules(remove_duplicate=False):
            if id(mod) in seen:
                continue
            seen.add(id(mod))
            for attr, p in mod._parameters.items():
                if p is not None:
                    users.setdefault(id(p), []).append((mname, mod, attr))

        def chunkable(p: nn.Parameter) -> bool:
            if chunk_numel is None or p.numel() <= chunk_numel or p.dim() != 2:
                return False
            # only modules running the stock forward (a subclass such as OPT's positional
            # embedding computes something else) or a scaled word embedding, outside the blocks
            return all(attr == "weight" and _unit_of(mname, units) is None
                       and ((isinstance(mod, nn.Linear) and type(mod).forward is nn.Linear.forward)
                            or (isinstance(mod, nn.Embedding) and mod.max_norm is None
                                and (type(mod).forward is nn.Embedding.forward
                                     or _is_scaled_embedding(mod))))
                       for mname, mod, attr in users[id(p)])

        self.names: list[str] = []
        initial: Params = []
        index_of: dict[int, int] = {}
        chunks_of: dict[int, list[tuple[int, int, int]]] = {}  # id(p) -> [(index, row a, row b)]
        frozen: dict[int, nn.Parameter] = {}
        for name, p in model.named_parameters():  # de-duplicates tied parameters
            if not trainable(name):
                frozen[id(p)] = nn.Parameter(p.detach().to(device=self.device, dtype=forward_dtype),
                                             requires_grad=False)
                continue
            master = p.detach().to(device=self.device, dtype=torch.float32)
            if chunkable(p):
                rows = max(1, chunk_numel // p.shape[1])
                spans = []
                for a in range(0, p.shape[0], rows):
                    b = min(a + rows, p.shape[0])
                    spans.append((len(self.names), a, b))
                    self.names.append(f"{name}[{a}:{b}]")
                    initial.append(master[a:b])  # a view: no copy
                chunks_of[id(p)] = spans
            else:
                index_of[id(p)] = len(self.names)
                self.names.append(name)
                initial.append(master)
        if not self.names:
            raise ValueError("no trainable parameter: the name filter matched nothing")
        self.shapes = [t.shape for t in initial]
        self.chunked = {i for spans in chunks_of.values() for i, _, _ in spans}

        def placeholder(shape) -> nn.Parameter:
            nan = torch.full((), float("nan"), dtype=forward_dtype, device=self.device)
            return nn.Parameter(nan.expand(shape), requires_grad=False)

        self._placeholders = {i: placeholder(s) for i, s in enumerate(self.shapes) if i not in self.chunked}
        self._slots: dict[int, list[Slot]] = {}  # id(unit module) -> its slots
        unit_modules: dict[int, nn.Module] = {}
        uses: dict[int, int] = {}
        seen.clear()
        for mname, mod in model.named_modules(remove_duplicate=False):
            if id(mod) in seen:
                continue
            seen.add(id(mod))
            for attr, p in list(mod._parameters.items()):
                if p is None:
                    continue
                if id(p) in frozen:
                    mod._parameters[attr] = frozen[id(p)]
                elif id(p) in chunks_of:
                    mod._parameters[attr] = placeholder(p.shape)
                    self._install_chunked(mod, chunks_of[id(p)])
                else:
                    i = index_of[id(p)]
                    # hooks on each parameter-owning module keep one weight alive at a time;
                    # with several workers a whole block is built at once, so they can share it
                    unit_name = _unit_of(mname, units) if self.workers > 1 else None
                    unit = units[unit_name] if unit_name is not None else mod
                    self._slots.setdefault(id(unit), []).append((mod, attr, i))
                    unit_modules[id(unit)] = unit
                    uses[i] = uses.get(i, 0) + 1
                    mod._parameters[attr] = self._placeholders[i]
            for bname, b in list(mod._buffers.items()):
                if b is not None and b.device != self.device:
                    mod._buffers[bname] = b.to(self.device)
        _refuse_weight_dumps(model)
        # a small master used by several slots (a tie below chunk size) is built once per forward
        self.tied = frozenset(i for i, n in uses.items() if n > 1)
        self._unit_indices = {u: sorted({i for _, _, i in slots}) for u, slots in self._slots.items()}
        for uid, unit in unit_modules.items():
            unit.register_forward_pre_hook(self._make_pre_hook(uid))
            unit.register_forward_hook(self._make_post_hook(uid))

        self._initial: Params | None = initial
        self._pool = _Pool(self.device)
        self._state: tuple[Params, Perturbation | None] | None = None
        self._cache: dict[int, tuple[torch.Tensor, object]] = {}
        self._live: dict[int, list[tuple[torch.Tensor, object]]] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._samplers = threading.local()

    # -- parameters --------------------------------------------------------------------------
    def take_initial(self) -> Params:
        """The module's own weights as fp32 masters; handed over once (no copy is kept)."""
        if self._initial is None:
            raise RuntimeError("initial weights were already handed over")
        params, self._initial = self._initial, None
        return params

    def masters_of(self, model: nn.Module) -> Params:
        """fp32 masters of another instance of the same architecture, in this module's order."""
        named = dict(model.named_parameters())
        out = []
        for n, s in zip(self.names, self.shapes):
            base, _, rows = n.partition("[")
            if base not in named:
                raise ValueError(f"model lacks parameter {base}")
            t = named[base].detach().to(device=self.device, dtype=torch.float32)
            if rows:
                a, b = (int(x) for x in rows.rstrip("]").split(":"))
                t = t[a:b]
            if t.shape != s:
                raise ValueError(f"parameter {n}: shape {tuple(t.shape)} != {tuple(s)}")
            out.append(t)
        return out

    @property
    def pool_allocations(self) -> int:
        return self._pool.allocations

    # -- binding -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def bind(self, params: Params, pert: Perturbation | None = None) -> Iterator[nn.Module]:
        """Inside, calling the module computes with weights ``params`` (+ ``pert``)."""
        if self._state is not None:
            raise RuntimeError("FunctionalModule.bind is not re-entrant")
        if len(params) != len(self.shapes):
            raise ValueError(f"{len(params)} tensors for {len(self.shapes)} parameters")
        if pert is not None and torch.is_grad_enabled():
            raise RuntimeError("perturbed forwards are for zeroth-order estimates: use torch.no_grad()")
        self._state = (params, pert)
        try:
            yield self.module
        finally:
            for uid in list(self._live):
                self._release(uid)
            for t, token in self._cache.values():
                self._pool.give(t, token)
            self._cache.clear()
            self._state = None

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown()
            self._executor = None
        self._pool.clear()

    def _bound(self) -> tuple[Params, Perturbation | None]:
        if self._state is None:
            raise RuntimeError("call the module inside FunctionalModule.bind(params, pert)")
        return self._state

    # -- unit hooks --------------------------------------------------------------------------
    def _make_pre_hook(self, uid: int):
        def hook(module, args):
            self._bound()
            if uid not in self._live:  # (a unit re-entered inside itself keeps its weights)
                self._build(uid)
            return None
        return hook

    def _make_post_hook(self, uid: int):
        def hook(module, args, output):
            if self._state is not None:
                self._release(uid)
            return None
        return hook

    def _build(self, uid: int) -> None:
        params, pert = self._state
        todo = [i for i in self._unit_indices[uid] if i not in self._cache]
        made = self._make_many(todo, params, pert)
        live = []
        for i in todo:
            if i in self.tied:
                self._cache[i] = made[i]
            else:
                live.append(made[i])
        for mod, attr, i in self._slots[uid]:
            mod._parameters[attr] = (self._cache[i] if i in self._cache else made[i])[0]
        self._live[uid] = live

    def _release(self, uid: int) -> None:
        for mod, attr, i in self._slots[uid]:
            mod._parameters[attr] = self._placeholders[i]
        for t, token in self._live.pop(uid, ()):
            self._pool.give(t, token)

    # -- chunked embedding / linear modules --------------------------------------------------
    def _install_chunked(self, mod: nn.Module, spans: list[tuple[int, int, int]]) -> None:
        fm = self
        if isinstance(mod, nn.Embedding):
            def forward(self, input: torch.Tensor) -> torch.Tensor:
                return fm._chunked_embedding(self, spans, input)
        else:
            def forward(self, input: torch.Tensor) -> torch.Tensor:
                return fm._chunked_linear(self, spans, input)
        mod.forward = types.MethodType(forward, mod)

    def _chunks(self, spans) -> Iterator[tuple[int, int, torch.Tensor, object]]:
        """(row a, row b, weight, pool token) of each chunk in ``spans``, built ``workers`` at a
        time (one at a time for unperturbed forwards, which only read the masters)."""
        params, pert = self._bound()
        step = self.workers if pert is not None else 1
        for k in range(0, len(spans), step):
            window = spans[k : k + step]
            made = self._make_many([i for i, _, _ in window], params, pert)
            for i, a, b in window:
                yield a, b, *made[i]

    def _chunked_embedding(self, mod: nn.Embedding, spans, input: torch.Tensor) -> torch.Tensor:
        flat = input.reshape(-1)
        # a chunk holding no token of this batch is not built at all (one host sync in all)
        ids = torch.unique(flat).tolist()
        if ids and (ids[0] < 0 or ids[-1] >= spans[-1][2]):
            raise IndexError(f"token id out of range [0, {spans[-1][2]})")
        hit = [(i, a, b) for i, a, b in spans if bisect.bisect_left(ids, a) < bisect.bisect_left(ids, b)]
        out = None
        for a, b, w, token in self._chunks(hit):
            sel = (flat >= a) & (flat < b)
            pad = mod.padding_idx - a if mod.padding_idx is not None and a <= mod.padding_idx < b else None
            rows = F.embedding(flat[sel] - a, w, pad)
            if out is None:
                out = torch.zeros(flat.numel(), w.shape[1], dtype=w.dtype, device=w.device)
            out = out.index_put((sel,), rows)
            self._pool.give(w, token)
        if out is None:
            raise ValueError("embedding input holds no index in range")
        if type(mod).forward is not nn.Embedding.forward:  # a scaled word embedding
            out = out * _scale_of(mod, out.dtype)
        return out.view(*input.shape, -1)

    def _chunked_linear(self, mod: nn.Linear, spans, input: torch.Tensor) -> torch.Tensor:
        parts = []
        bias = mod.bias
        for a, b, w, token in self._chunks(spans):
            parts.append(F.linear(input, w, None if bias is None else bias[a:b]))
            self._pool.give(w, token)
        return torch.cat(parts, dim=-1)

    # -- building weights --------------------------------------------------------------------
    def _make_many(self, todo: list[int], params: Params, pert: Perturbation | None) -> dict:
        if pert is None or self.workers == 1 or len(todo) < 2:
            sampler = pert.sampler if pert is not None else None
            with _serial_ops(pert is not None):
                return {i: self._make(i, params, pert, sampler) for i in todo}
        # longest-processing-time split of the unit's tensors over the workers
        groups: list[list[int]] = [[] for _ in range(self.workers)]
        loads = [0] * self.workers
        for i in sorted(todo, key=lambda j: -params[j].numel()):
            k = loads.index(min(loads))
            groups[k].append(i)
            loads[k] += params[i].numel()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.workers - 1, thread_name_prefix="zo-dir")
        futures = [self._executor.submit(self._make_group, g, params, pert) for g in groups[1:]]
        out = self._make_group(groups[0], params, pert, main=True)
        for f in futures:
            out.update(f.result())
        return out

    def _make_group(self, group: list[int], params: Params, pert: Perturbation, main: bool = False) -> dict:
        sampler = pert.sampler if main else self._thread_sampler(pert.sampler)
        with torch.no_grad(), _serial_ops():
            return {i: self._make(i, params, pert, sampler) for i in group}

    def _thread_sampler(self, like: DirectionSampler) -> DirectionSampler:
        # directions are a function of (seed, index, kind, device): a per-thread clone draws
        # exactly what the shared sampler would
        s = getattr(self._samplers, "sampler", None)
        if s is None or s.kind != like.kind or s.device != like.device:
            s = self._samplers.sampler = DirectionSampler(like.kind, like.device)
        return s

    def _mul_rsqrt(self, u: torch.Tensor, H: torch.Tensor) -> None:
        """u *= rsqrt(H), elementwise as in zo.direction, through a small scratch slice by slice
        (elementwise ops give the same bits in slices; no tensor-sized temporary)."""
        flat_u, flat_h = u.view(-1), H.reshape(-1)
        n, step = flat_u.numel(), SCRATCH_NUMEL
        scratch, token = self._pool.take(torch.Size([min(n, step)]), torch.float32)
        for a in range(0, n, step):
            b = min(a + step, n)
            torch.rsqrt(flat_h[a:b], out=scratch[: b - a])
            flat_u[a:b].mul_(scratch[: b - a])
        del flat_u, flat_h  # views: they would keep the storage "in use" for the pool
        self._pool.give(scratch, token)

    def _make(self, i: int, params: Params, pert: Perturbation | None, sampler) -> tuple:
        """The weight tensor of master ``i`` for this forward, and its pool token
        (``False``: not a pool buffer, nothing to recycle)."""
        master = params[i]
        if pert is None:
            if self.dtype == torch.float32 or master.requires_grad:
                w = master if self.dtype == torch.float32 else master.to(self.dtype)
                return w, False
            w, token = self._pool.take(master.shape, self.dtype)
            return w.copy_(master), token
        u, token = self._pool.take(master.shape, torch.float32)
        # exactly zo.Perturbation.delta (u * rsqrt(H), then * scale), then + master as
        # PerturbBuffer's p.add_(delta) does: the loss at x + mu z is the same number whichever
        # way it is computed (a test checks it bit for bit); temporaries come from the pool
        if sampler.kind == "rademacher_bits":
            # +-scale straight from the table, then * rsqrt(H): +-round(scale * r), the bits of
            # (+-r) * scale (one rounding of the same product): a multiply pass fewer
            sampler.scaled_signs(pert.seed, i, master, pert.scale, out=u)
            if pert.H is not None:
                self._mul_rsqrt(u, pert.H[i])
            u.add_(master)
        else:
            sampler.sample(pert.seed, i, master, out=u)
            if pert.H is not None:
                self._mul_rsqrt(u, pert.H[i])
            u.mul_(pert.scale).add_(master)
        if self.dtype == torch.float32:
            return u, token
        w, wtoken = self._pool.take(master.shape, self.dtype)
        w.copy_(u)
        self._pool.give(u, token)
        return w, wtoken
