"""Cost of a HiSo step on a real-shaped language model, against its forward-pass floor.

At the OPT-125M shape (random init, fp32, 12 layers x 768, vocabulary 50,272; no download), batch
16 rows x 64 tokens, P = 5, tau = 1, it prints

* time ratio   = (HiSo local step time) / ((P + 1) x forward time)   goal: median <= 1.20
  Exactly what is timed, in the "train" child process (torch threads: ``--threads``, default 2;
  direction threads: the task's default unless ``--direction-threads``):
  - forward: ``LMTask.loss(params, batch, None)``, one unperturbed forward through
    FunctionalModule plus the loss, no autograd; each repeat times P + 1 of them back to back
    and keeps their mean.
  - step: one client's estimate, ``zo.estimate`` over ``LMTask.loss``: 1 unperturbed + P
    perturbed forwards, each perturbed one building every weight on the fly (draw u for the
    tensor, scale by H^{-1/2} and mu, add the master). It does *not* include any update: at
    tau = 1 a client takes no local step, and the model + H update is the server's
    ``round_update``, timed apart (``update`` below; a replayed round costs the same, see
    benchmarks/replay.py).
  - warm-up, untimed: one forward and one step before the repeats (pools, allocator).
  - each repeat times the P + 1 forwards, then the step, then the update: adjacent windows, so
    a busy neighbour slows them alike; the ratio is per repeat, best and median printed.
* memory ratio = (peak RSS of HiSo training) / (peak RSS of inference alone)  goal <= 1.6
  Each in its own process: inference = load the model through hiso.models and compute the same
  loss once with the plain Hugging Face module; training = build the LMTask, the HiSo
  federation (6 clients, 2 sampled) and run full rounds (both clients' estimates and the server
  update with its H update) on the same batch. DeComFL's training peak is printed too: HiSo's H
  is one more model-sized vector by definition, so the floor of HiSo's ratio is
  (base + 2 W) / (base + W) with W the fp32 weights and base the interpreter and libraries.

    .venv/bin/python benchmarks/lm_step.py [--repeats 5] [--threads 2]
        [--directions gaussian|rademacher_bits]

Timing on a shared machine is noisy: the load average is recorded with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

OPT_125M = dict(vocab_size=50272, hidden_size=768, num_hidden_layers=12, ffn_dim=3072,
                num_attention_heads=12, max_position_embeddings=2048, word_embed_proj_dim=768)


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_model(path: Path, layers: int, hidden: int) -> None:
    """A random-init OPT at the 125M shape (or smaller for a quick check), saved like a hub model."""
    import torch
    from transformers import OPTConfig, OPTForCausalLM

    from hiso.text import fixtures
    from hiso.text.synthetic import FILLER_WORDS, NEGATIVE_WORDS, POSITIVE_WORDS

    shape = dict(OPT_125M, num_hidden_layers=layers, hidden_size=hidden, word_embed_proj_dim=hidden,
                 ffn_dim=4 * hidden, num_attention_heads=max(1, hidden // 64))
    cfg = OPTConfig(**shape, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                    pad_token_id=0, bos_token_id=1, eos_token_id=1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = OPTForCausalLM(cfg)
    model.save_pretrained(str(path))
    words = [*FILLER_WORDS, *POSITIVE_WORDS, *NEGATIVE_WORDS, "It", "was", "terrible", "great"]
    fixtures.build_tiny_tokenizer(words).save_pretrained(str(path))


def bench_batch(batch: int, seq: int, vocab: int):
    """``batch`` rows of ``seq`` random tokens: batch/2 samples x 2 one-token candidates."""
    import torch

    from hiso.text.scoring import CandidateBatch

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (batch, seq), generator=g)
    n = batch // 2
    return CandidateBatch(
        input_ids=ids, attention_mask=torch.ones_like(ids),
        targets=ids[:, -1:].clone(), target_mask=torch.ones(batch, 1, dtype=torch.bool),
        sample_index=torch.arange(batch) // 2, candidate_index=torch.arange(batch) % 2,
        n_candidates=torch.full((n,), 2), correct=torch.zeros(n, dtype=torch.long))


# -- roles (each runs in its own process) ------------------------------------------------------
def role_infer(args) -> dict:
    import torch

    from hiso import models
    from hiso.text.scoring import task_loss

    model = models.load_model(models.resolve_source(args.model))
    batch = bench_batch(args.batch, args.seq, model.config.vocab_size)
    times = []
    with torch.no_grad():
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            task_loss(model, batch)
            times.append(time.perf_counter() - t0)
    return {"peak_mib": peak_mib(), "forward_s": times}


def _federation(args, method: str):
    from hiso.config import resolve
    from hiso.runner import Run

    cfg = {
        "name": "bench", "seed": 0,
        "task": {"name": "lm", "model": args.model, "dataset": "synthetic", "n_train": 60,
                 "n_dev": 0, "n_eval": 10, "max_length": args.seq},
        "method": {"name": method, "lr": 1e-6, "mu": 1e-3, "perturbations": args.P,
                   "directions": args.directions},
        "federation": {"clients": 6, "sampled": 2, "local_steps": 1, "rounds": 1},
    }
    if args.direction_threads is not None:
        cfg["task"]["direction_threads"] = args.direction_threads
    run = Run(resolve(cfg), Path(tempfile.mkdtemp()), progress=False)
    task, opt, fed = run.build()
    batch = bench_batch(args.batch, args.seq, task.fm.module.config.vocab_size)
    task.batch = lambda client, round, step: batch  # every client trains on the benchmark batch
    return task, opt, fed, batch


def role_train(args) -> dict:
    import torch

    from hiso.protocol import round_seed, step_seeds
    from hiso.zo import estimate

    import numpy as np

    task, opt, fed, batch = _federation(args, args.method)
    seeds = step_seeds(round_seed(0, 0), 1, args.P)[0]
    H = opt.preconditioner(fed.state)
    fwd, step, update = [], [], []

    def one_step():
        return estimate(lambda pert: task.loss(fed.params, batch, pert), seeds, opt.cfg.mu,
                        opt.sampler, H)

    task.loss(fed.params, batch, None)  # warm-up (allocator, pools), untimed
    one_step()
    for rep in range(args.repeats):
        # P + 1 plain forwards, then the step (P + 1 forwards + P sweeps), then the server's
        # update: adjacent windows, so a busy neighbour slows them alike
        t0 = time.perf_counter()
        for _ in range(args.P + 1):
            task.loss(fed.params, batch, None)
        fwd.append((time.perf_counter() - t0) / (args.P + 1))
        t0 = time.perf_counter()
        g, _ = one_step()
        step.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        # lr 1e-6: the model barely moves, so every repeat times the same computation
        opt.round_update(fed.params, fed.state, step_seeds(round_seed(0, rep), 1, args.P),
                         np.asarray([g], dtype=np.float32))
        update.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    for r in range(args.rounds):
        fed.run_round(r)
    round_s = (time.perf_counter() - t0) / max(args.rounds, 1)
    return {"peak_mib": peak_mib(), "forward_s": fwd, "step_s": step, "update_s": update,
            "round_s": round_s, "torch_threads": torch.get_num_threads(),
            "num_params": task.num_params(), "tensors": len(task.fm.names),
            "direction_threads": task.fm.workers}


def role_memory(args) -> dict:
    """Training peak only: the federation and its rounds, no timing loop."""
    task, opt, fed, batch = _federation(args, args.method)
    for r in range(args.rounds):
        fed.run_round(r)
    return {"peak_mib": peak_mib()}


def spawn(role: str, args, **over) -> dict:
    argv = [sys.executable, __file__, "--role", role, "--model", str(args.model)]
    for k in ("repeats", "batch", "seq", "P", "rounds", "direction_threads", "directions", "method",
              "threads"):
        v = over.get(k, getattr(args, k))
        if v is not None:
            argv += [f"--{k.replace('_', '-')}", str(v)]
    out = subprocess.run(argv, check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--role", default="main", choices=["main", "infer", "train", "memory"])
    ap.add_argument("--model", default=None, help="model directory (built at the OPT-125M shape if missing)")
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2, help="torch threads of every timed process")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--P", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--direction-threads", type=int, default=None, help="default: the task's auto choice")
    ap.add_argument("--directions", default="gaussian", choices=["gaussian", "rademacher", "rademacher_bits"])
    ap.add_argument("--method", default="hiso")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    if args.role != "main":
        import torch

        torch.set_num_threads(args.threads)
        fn = {"infer": role_infer, "train": role_train, "memory": role_memory}[args.role]
        print(json.dumps(fn(args)))
        return

    tmp = None
    if args.model is None:
        tmp = tempfile.TemporaryDirectory()
        args.model = str(Path(tmp.name) / "opt-125m-shape")
    if not (Path(args.model) / "config.json").exists():
        build_model(Path(args.model), args.layers, args.hidden)
    infer = spawn("infer", args)
    train = spawn("train", args)
    dec = spawn("memory", args, method="decomfl")
    P = args.P
    f, s = train["forward_s"], train["step_s"]
    ratios = [b / ((P + 1) * a) for a, b in zip(f, s)]  # per repeat: adjacent windows
    ratio_min, ratio_med = min(ratios), statistics.median(ratios)
    mem = train["peak_mib"] / infer["peak_mib"]
    res = {"shape": f"OPT-125M ({train['num_params']:,} params, {train['tensors']} master tensors)",
           "batch": args.batch, "seq": args.seq, "P": P, "directions": args.directions,
           "direction_threads": train["direction_threads"], "torch_threads": train["torch_threads"],
           "update_s": train["update_s"],
           "forward_s": f, "hf_forward_s": infer["forward_s"], "step_s": s,
           "round_s": train["round_s"], "time_ratios": ratios, "time_ratio_min": ratio_min,
           "time_ratio_median": ratio_med, "load_average": os.getloadavg(),
           "peak_infer_mib": infer["peak_mib"], "peak_hiso_mib": train["peak_mib"],
           "peak_decomfl_mib": dec["peak_mib"], "memory_ratio": mem,
           "memory_ratio_decomfl": dec["peak_mib"] / infer["peak_mib"]}
    print(f"shape: {res['shape']}, batch {args.batch} x seq {args.seq}, P = {P}, tau = 1, "
          f"{args.directions} directions, {res['direction_threads']} direction thread(s), "
          f"{res['torch_threads']} torch threads")
    print(f"forward (task loss, FunctionalModule): min {min(f):.3f} s, median {statistics.median(f):.3f} s; "
          f"plain HF module: min {min(infer['forward_s']):.3f} s")
    print(f"HiSo local step (1 + P forwards, P perturbations built on the fly; no update; 1 warm-up "
          f"step untimed): min {min(s):.3f} s, median {statistics.median(s):.3f} s")
    u = train["update_s"]
    print(f"server round_update (model step + H update; not in the ratio): min {min(u):.3f} s, "
          f"median {statistics.median(u):.3f} s")
    print(f"time ratio step / ((P+1) x forward), per repeat: {' '.join(f'{r:.3f}' for r in ratios)}")
    print(f"time ratio: {ratio_min:.3f} (best repeat), {ratio_med:.3f} (median repeat)"
          f"  goal: median <= 1.20 -> {'MET' if ratio_med <= 1.2 else 'MISSED'}")
    print(f"full HiSo round (2 clients + server update): {train['round_s']:.2f} s")
    print(f"peak RSS: inference {infer['peak_mib']:.0f} MiB, HiSo training {train['peak_mib']:.0f} MiB, "
          f"DeComFL training {dec['peak_mib']:.0f} MiB")
    print(f"memory ratio HiSo / inference: {mem:.3f}  goal <= 1.6 -> {'MET' if mem <= 1.6 else 'MISSED'}"
          f"  (DeComFL / inference: {res['memory_ratio_decomfl']:.3f})")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
