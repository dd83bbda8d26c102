"""GPU readiness: a few HiSo rounds on random-init models of real shapes, through hiso's CUDA path.

For each shape (SmolLM2-135M, OPT-1.3B, OPT-2.7B by default), built from a transformers config
class straight on the device (random init: no download, no file written), it runs HiSo with
6 clients / 2 sampled, P perturbations, tau = 1, and checks and prints:

* the path itself: fp32 master weights on the device, forwards in ``--dtype`` (bfloat16 by
  default) built layer by layer from the masters (hiso.module_zo), directions drawn on the device
  by seeded generators (hiso.directions), the HiSo update and its H update on the device;
* time ratio = (one client's ZO estimate: P+1 forwards + P perturbation sweeps) / ((P+1) x the
  unperturbed forward), best and median of ``--repeats``; and a full round's wall time;
* peak GPU memory of training (torch.cuda.max_memory_allocated), beside the fp32 masters + H;
* replay: a client holding the initial weights catches up from the broadcast (seed, scalars)
  history to the server's weights bit for bit on the device (``--no-replay-check`` skips it: it
  holds a second copy of the weights and of H).

Only torch, transformers and hiso are needed, and no network:

    python benchmarks/gpu_ready.py                      # CUDA, bf16, the three shapes
    python benchmarks/gpu_ready.py --device cpu --tiny  # the same code path, tiny shapes
                                                        # (tests/test_gpu_ready.py runs it)

Exit status 1 if a check fails.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

# the models' published shapes (config.json of HuggingFaceTB/SmolLM2-135M, facebook/opt-1.3b,
# facebook/opt-2.7b); --tiny keeps the architecture and shrinks every size
SHAPES = {
    "smollm2-135m": ("llama", dict(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                                   num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                                   max_position_embeddings=8192, rope_theta=100000.0,
                                   tie_word_embeddings=True)),
    "opt-1.3b": ("opt", dict(vocab_size=50272, hidden_size=2048, ffn_dim=8192, num_hidden_layers=24,
                             num_attention_heads=32, max_position_embeddings=2048,
                             word_embed_proj_dim=2048)),
    "opt-2.7b": ("opt", dict(vocab_size=50272, hidden_size=2560, ffn_dim=10240, num_hidden_layers=32,
                             num_attention_heads=32, max_position_embeddings=2048,
                             word_embed_proj_dim=2560)),
}
TINY = {"llama": dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128),
        "opt": dict(vocab_size=512, hidden_size=64, ffn_dim=128, num_hidden_layers=2,
                    num_attention_heads=4, max_position_embeddings=128, word_embed_proj_dim=64)}
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def build_model(kind: str, shape: dict, device: torch.device):
    """Random-init causal LM of that shape, created on ``device`` in float32 (the masters)."""
    from transformers import LlamaConfig, LlamaForCausalLM, OPTConfig, OPTForCausalLM

    if kind == "llama":
        cfg, cls = LlamaConfig(**shape), LlamaForCausalLM
    else:
        cfg = OPTConfig(**shape, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                        pad_token_id=1, bos_token_id=2, eos_token_id=2)
        cls = OPTForCausalLM
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(0)
        return cls(cfg).eval()


def token_batch(batch: int, seq: int, vocab: int):
    """``batch`` rows of random tokens: batch/2 samples with two one-token candidates each."""
    from hiso.text.scoring import CandidateBatch

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (batch, seq), generator=g)
    n = batch // 2
    return CandidateBatch(
        input_ids=ids, attention_mask=torch.ones_like(ids), targets=ids[:, -1:].clone(),
        target_mask=torch.ones(batch, 1, dtype=torch.bool), sample_index=torch.arange(batch) // 2,
        candidate_index=torch.arange(batch) % 2, n_candidates=torch.full((n,), 2),
        correct=torch.zeros(n, dtype=torch.long))


def make_task(fm, batch):
    """A task serving one fixed batch to every client, scored as hiso's LM task scores one."""
    from hiso.tasks.base import Task
    from hiso.text.scoring import task_loss

    class FixedBatch(Task):
        name = "gpu_ready"

        def init_params(self):
            return fm.take_initial()

        def batch(self, client, round, step):
            return batch

        def loss(self, params, b, pert=None):
            with torch.no_grad(), fm.bind(params, pert) as model:
                return float(task_loss(model, b))

    return FixedBatch(None, 6, 0)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_shape(name: str, args) -> dict:
    from hiso.config import FederationConfig
    from hiso.directions import DirectionSampler
    from hiso.module_zo import FunctionalModule
    from hiso.optimizers.hiso import HiSo, HiSoConfig
    from hiso.protocol import ZOFederation, catch_up, round_seed, step_seeds
    from hiso.zo import estimate, params_sha256

    device = torch.device(args.device)
    kind, shape = SHAPES[name]
    if args.tiny:
        shape = {**shape, **TINY[kind]}
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    model = build_model(kind, shape, device)
    fm = FunctionalModule(model, forward_dtype=DTYPES[args.dtype], device=device)
    batch = token_batch(args.batch, args.seq, shape["vocab_size"])
    task = make_task(fm, batch)
    opt = HiSo(HiSoConfig(lr=args.lr, mu=1e-3, perturbations=args.P, directions=args.directions),
               DirectionSampler(args.directions, device=device))
    fed = ZOFederation(task, opt, FederationConfig(clients=6, sampled=2, local_steps=1), run_seed=0)
    build_s = time.perf_counter() - t0
    n_params = sum(p.numel() for p in fed.params)
    initial = [p.clone() for p in fed.params] if args.replay_check else None

    # warm-up (allocator, pools), then adjacent windows: P+1 plain forwards, one client estimate
    seeds = step_seeds(round_seed(0, 0), 1, args.P)[0]
    H = opt.preconditioner(fed.state)
    losses = [task.loss(fed.params, batch)]
    fwd, step = [], []
    for _ in range(args.repeats):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(args.P + 1):
            losses.append(task.loss(fed.params, batch))
        sync(device)
        fwd.append((time.perf_counter() - t0) / (args.P + 1))
        t0 = time.perf_counter()
        g, _ = estimate(lambda pert: task.loss(fed.params, batch, pert), seeds, opt.cfg.mu,
                        opt.sampler, H)
        sync(device)
        step.append(time.perf_counter() - t0)
    round_s = []
    for r in range(args.rounds):
        t0 = time.perf_counter()
        res = fed.run_round(r)
        sync(device)
        round_s.append(time.perf_counter() - t0)
        losses.append(res.train_loss)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None

    checks = {
        "masters fp32 on device": all(p.dtype == torch.float32 and p.device.type == device.type
                                      for p in fed.params),
        "H on device, finite, > 0": all(h.device.type == device.type and bool(torch.isfinite(h).all())
                                        and bool((h > 0).all()) for h in fed.state),
        "H moved from ones": any(not bool((h == 1).all()) for h in fed.state),
        "directions drawn on device": opt.sampler.device.type == device.type,
        "losses finite": all(map(lambda v: v == v and abs(v) != float("inf"), losses)),
        "scalars finite": bool(all(abs(float(x)) != float("inf") and x == x for x in g)),
    }
    if initial is not None:
        state = opt.init_state(initial)
        catch_up(opt, initial, state, fed.history.since(0), 1, args.P)
        checks["replay bit-identical to the server"] = (params_sha256(initial) == params_sha256(fed.params)
                                                       and all(torch.equal(a, b) for a, b in zip(state, fed.state)))
        del initial, state
    ratios = [s / ((args.P + 1) * f) for f, s in zip(fwd, step)]
    out = {"shape": name, "architecture": type(model).__name__, "params": n_params,
           "tensors": len(fm.names), "device": str(device), "dtype": args.dtype,
           "directions": args.directions, "batch": args.batch, "seq": args.seq, "P": args.P,
           "build_s": build_s, "forward_s": fwd, "step_s": step, "round_s": round_s,
           "time_ratios": ratios, "time_ratio_min": min(ratios),
           "time_ratio_median": statistics.median(ratios),
           "masters_and_h_gib": 2 * 4 * n_params / 2**30,
           "peak_gpu_gib": None if peak is None else peak / 2**30,
           "checks": checks, "ok": all(checks.values())}
    fm.close()
    del fed, task, fm, model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def report(r: dict) -> str:
    peak = ("" if r["peak_gpu_gib"] is None else
            f", peak GPU memory {r['peak_gpu_gib']:.2f} GiB (fp32 masters + H: {r['masters_and_h_gib']:.2f} GiB)")
    failed = [k for k, v in r["checks"].items() if not v]
    return (f"{r['shape']} ({r['architecture']}, {r['params'] / 1e6:.1f}M params, {r['tensors']} master "
            f"tensors) on {r['device']}, {r['dtype']} forwards, {r['directions']} directions, "
            f"batch {r['batch']} x {r['seq']}, P = {r['P']}:\n"
            f"  forward {statistics.median(r['forward_s']) * 1e3:.1f} ms, client estimate "
            f"{statistics.median(r['step_s']) * 1e3:.1f} ms, step / ((P+1) x forward) "
            f"{r['time_ratio_min']:.2f} (best) {r['time_ratio_median']:.2f} (median), full round "
            f"{statistics.median(r['round_s']):.2f} s{peak}\n"
            f"  checks: {'all passed' if not failed else 'FAILED: ' + ', '.join(failed)}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--shapes", default=",".join(SHAPES), help=f"comma-separated, of {', '.join(SHAPES)}")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes of the same architectures (CPU smoke test)")
    ap.add_argument("--dtype", default="bfloat16", choices=list(DTYPES))
    ap.add_argument("--directions", default="gaussian", choices=["gaussian", "rademacher", "rademacher_bits"])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--P", type=int, default=5)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-replay-check", dest="replay_check", action="store_false")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_ready: no CUDA device here (use --device cpu --tiny for the CPU smoke test)",
              file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [s.strip() for s in args.shapes.split(",") if s.strip()]
    unknown = [s for s in names if s not in SHAPES]
    if unknown:
        print(f"gpu_ready: unknown shape(s) {', '.join(unknown)} (known: {', '.join(SHAPES)})", file=sys.stderr)
        return 2
    env = {"torch": torch.__version__, "device_name": (torch.cuda.get_device_name(args.device)
                                                       if args.device.startswith("cuda") else "cpu")}
    print(f"torch {env['torch']} on {env['device_name']}")
    results = []
    for name in names:
        results.append(run_shape(name, args))
        print(report(results[-1]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"env": env, "results": results}, indent=2) + "\n")
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
