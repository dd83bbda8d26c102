"""Language-model fine-tuning: any Hugging Face causal LM on a declarative text task, federated.

* Model: ``model`` is a hub name (``facebook/opt-125m`` ...) or a local directory, loaded by
  :mod:`hiso.models` in float32. Its trainable weights (all of them, or the names matching the
  ``trainable`` regular expressions) become the float32 master list the protocol owns; the
  module itself keeps only placeholders and computes with whatever list it is given
  (:mod:`hiso.module_zo`), perturbed block by block on the fly, in ``runtime.forward_dtype``.
  The masters are never written by a forward, in any precision.
* Data: ``dataset`` names a :class:`hiso.text.templates.TextTaskSpec` (sst2, qqp, squad, cb,
  wsc, wic, rte, boolq, multirc, synthetic): hub loading through ``datasets`` or local JSON-lines
  files under ``data_dir``, the template, the verbalisers and the metric all live there.
  Train / dev / eval have fixed sizes drawn with ``data_seed`` (not the run seed: every seed of
  a study sees the same examples); dev is for selection, eval for reporting.
* Clients: the train split is partitioned IID or by label Dirichlet(alpha) with ``data_seed``;
  ``clients.json`` in the run directory lists every client's size and label counts.
* Batches: ``batch_size`` distinct examples of the client's shard drawn by
  ``numpy.random.default_rng([run seed, client, round, step])`` (the whole shard if smaller).
* Loss: cross-entropy over the candidates' length-normalised log-likelihoods (classification),
  token cross-entropy of the answer (SQuAD). Only the continuation positions' logits are
  computed. Metric: accuracy, or SQuAD F1 (and EM) of greedy answers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from .. import io
from ..errors import UserError
from ..partition import dirichlet_partition, iid_partition, label_counts, label_skew
from ..zo import Params, Perturbation
from ..schema import SEED_MAX
from .base import Task

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LMConfig:
    #: hub name (facebook/opt-125m ...), a directory written by save_pretrained, a .gguf file
    #: or pkg:PACKAGE/file.gguf (converted once, then cached: hiso.models)
    model: str = "facebook/opt-125m"
    gguf_file: str | None = None  # a GGUF file inside the ``model`` directory or package
    revision: str | None = None
    cache_dir: str | None = None  # HF cache for models and data sets (default: HF_HOME)
    #: the text task (hiso.text.templates.TASKS)
    dataset: str = "sst2"
    data_dir: str | None = None   # local {split}.jsonl files instead of the hub
    n_train: int = field(default=1000, metadata={"ge": 1})
    n_dev: int = field(default=500, metadata={"ge": 0})
    n_eval: int = field(default=1000, metadata={"ge": 1})
    data_seed: int = field(default=0, metadata={"ge": 0, "le": SEED_MAX})
    partition: Literal["iid", "dirichlet"] = "iid"
    alpha: float = field(default=1.0, metadata={"gt": 0})       # Dirichlet concentration
    min_client_size: int = field(default=1, metadata={"ge": 1})
    batch_size: int = field(default=16, metadata={"ge": 1})
    max_length: int = field(default=256, metadata={"ge": 8})     # prompt + continuation tokens
    eval_batch_size: int = field(default=32, metadata={"ge": 1})
    max_new_tokens: int = field(default=16, metadata={"ge": 1})  # greedy answers (SQuAD)
    #: regular expressions (re.search) over parameter names; null: full-parameter tuning
    trainable: list[str] | None = None
    #: threads drawing a block's random directions at once (the values do not depend on it).
    #: 1 by default: at the OPT-125M shape on 2 cores, 2 threads cut the median Gaussian step
    #: only from 1.58 to 1.51 forwards' worth (benchmarks/lm_step.py), within the noise
    direction_threads: int = field(default=1, metadata={"ge": 1})

    def check(self, path: str) -> None:
        from ..text.templates import TASKS as TEXT_TASKS

        if self.dataset not in TEXT_TASKS:
            raise UserError(f"{path}.dataset: unknown text task {self.dataset!r} "
                            f"(known: {', '.join(sorted(TEXT_TASKS))})")
        spec = TEXT_TASKS[self.dataset]
        hub = self.data_dir is None  # local files may hold any number of rows
        if hub and spec.eval_rows is not None and self.n_eval > spec.eval_rows:
            raise UserError(f"{path}.n_eval: {self.n_eval} > the {spec.eval_rows} labelled rows of "
                            f"{self.dataset}'s {spec.eval_split} split")
        if hub and spec.train_rows is not None and self.n_train + self.n_dev > spec.train_rows:
            raise UserError(f"{path}.n_train: {self.n_train} + n_dev {self.n_dev} > the "
                            f"{spec.train_rows} labelled rows of {self.dataset}'s "
                            f"{spec.train_split} split")
        if self.partition == "dirichlet" and spec.is_generation:
            raise UserError(f"{path}.partition: dirichlet needs labels; {self.dataset} is a "
                            f"generation task (use iid)")
        for i, pattern in enumerate(self.trainable or []):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise UserError(f"{path}.trainable[{i}]: not a regular expression ({exc})") from None
        if self.trainable is not None and not self.trainable:
            raise UserError(f"{path}.trainable: empty list (use null for every parameter)")


def _device(runtime) -> torch.device:
    from ..device import resolve_device

    return torch.device(resolve_device(getattr(runtime, "device", "cpu") or "cpu"))


class LMTask(Task):
    name = "lm"
    metric = "accuracy"
    metric_mode = "max"
    Config = LMConfig

    def __init__(self, cfg: LMConfig, num_clients: int, seed: int, runtime=None):
        super().__init__(cfg, num_clients, seed, runtime)
        self._setup(load_data=True)

    @classmethod
    def for_parameters(cls, cfg: LMConfig, num_clients: int, seed: int, runtime=None) -> "LMTask":
        """The model and tokenizer alone (no data set is read): enough to rebuild, hash and
        save parameters, e.g. on a machine that has the base model but not the data."""
        self = cls.__new__(cls)
        Task.__init__(self, cfg, num_clients, seed, runtime)
        self._setup(load_data=False)
        return self

    def _setup(self, load_data: bool) -> None:
        from .. import models
        from ..module_zo import FunctionalModule, return_large_frees_to_os
        from ..text import data
        from ..text.templates import get_task

        cfg = self.cfg
        return_large_frees_to_os()  # freed activations and update temporaries leave the RSS
        self.spec = get_task(cfg.dataset)
        self.metric = "f1" if self.spec.is_generation else "accuracy"
        self.device = _device(self.runtime)
        self.dtype = DTYPES[getattr(self.runtime, "forward_dtype", "float32") or "float32"]
        # data first: a missing data set is reported before a multi-GB model load
        if load_data:
            self.splits = data.load_splits(self.spec, cfg.n_train, cfg.n_dev, cfg.n_eval,
                                           cfg.data_seed, cfg.data_dir, cfg.cache_dir)
        self.source = models.resolve_source(cfg.model, cfg.revision, cfg.cache_dir, cfg.gguf_file)
        self.tokenizer = models.load_tokenizer(self.source)
        model = models.load_model(self.source)
        max_pos = getattr(model.config, "max_position_embeddings", None)
        if max_pos is not None and cfg.max_length > max_pos:
            raise UserError(f"task.max_length: {cfg.max_length} > the model's "
                            f"{max_pos} positions")
        trainable = None
        if cfg.trainable is not None:
            patterns = [re.compile(p) for p in cfg.trainable]
            trainable = lambda name: any(p.search(name) for p in patterns)  # noqa: E731
        try:
            self.fm = FunctionalModule(model, trainable, self.dtype, self.device,
                                       workers=cfg.direction_threads)
        except ValueError as exc:
            raise UserError(f"task.trainable: {exc}") from None
        self._eval_cache: dict[str, list] = {}
        if load_data:
            self.parts = self._partition()

    # -- parameters --------------------------------------------------------------------------
    def init_params(self) -> Params:
        """x_0. The first call hands over the loaded weights (no second copy is ever held);
        later calls (faithful-mode clients, baselines' copies) reload them from the source."""
        try:
            return self.fm.take_initial()
        except RuntimeError:
            from .. import models

            return self.fm.masters_of(models.load_model(self.source))

    def num_params(self) -> int:
        return sum(int(np.prod(s)) for s in self.fm.shapes)

    # -- data --------------------------------------------------------------------------------
    def _labels(self) -> np.ndarray | None:
        if self.spec.is_generation:
            return None
        return np.array([s.correct for s in self.splits.train], dtype=np.int64)

    def _partition(self) -> list[np.ndarray]:
        cfg = self.cfg
        n = len(self.splits.train)
        try:
            if cfg.partition == "iid":
                if n < self.num_clients * cfg.min_client_size:
                    raise ValueError(f"{n} train examples for {self.num_clients} clients "
                                     f"of at least {cfg.min_client_size}")
                return iid_partition(n, self.num_clients, cfg.data_seed)
            return dirichlet_partition(self._labels(), self.num_clients, cfg.alpha, cfg.data_seed,
                                       cfg.min_client_size)
        except ValueError as exc:
            raise UserError(f"task.n_train: cannot partition ({exc})") from None

    def client_weight(self, client: int) -> float:
        return float(len(self.parts[client]))

    def batch(self, client: int, round: int, step: int):
        from ..text.scoring import encode_samples

        part = self.parts[client]
        rng = np.random.default_rng([self.seed, client, round, step])
        k = min(self.cfg.batch_size, len(part))
        picked = part[np.sort(rng.choice(len(part), size=k, replace=False))]
        samples = [self.splits.train[int(i)] for i in picked]
        return encode_samples(self.spec, self.tokenizer, samples, max_length=self.cfg.max_length)

    # -- loss --------------------------------------------------------------------------------
    def loss(self, params: Params, batch, pert: Perturbation | None = None) -> float:
        from ..text.scoring import task_loss

        with torch.no_grad(), self.fm.bind(params, pert) as model:
            return float(task_loss(model, batch))

    def batch_loss(self, params: Params, batch) -> torch.Tensor:
        from ..text.scoring import task_loss

        with self.fm.bind(params) as model:
            return task_loss(model, batch).float()

    # -- evaluation --------------------------------------------------------------------------
    def _chunks(self, split: str) -> list:
        """Pre-encoded evaluation batches of a split (tokenised once per run)."""
        from ..text.scoring import encode_samples

        if split not in self._eval_cache:
            samples = getattr(self.splits, split)
            bs = self.cfg.eval_batch_size
            self._eval_cache[split] = [
                (chunk, encode_samples(self.spec, self.tokenizer, chunk, max_length=self.cfg.max_length))
                for chunk in (samples[i : i + bs] for i in range(0, len(samples), bs))]
        return self._eval_cache[split]

    def _evaluate_split(self, model, split: str) -> dict[str, float]:
        from ..text import metrics, scoring

        chunks = self._chunks(split)
        n = sum(len(c) for c, _ in chunks)
        if self.spec.is_generation:
            answers, golds, loss_sum, tokens = [], [], 0.0, 0
            for chunk, enc in chunks:
                answers += scoring.greedy_generate(model, self.tokenizer,
                                                   [self.spec.encode(s) for s in chunk],
                                                   self.cfg.max_new_tokens,
                                                   max_length=self.cfg.max_length)
                golds += [list(s.golds) for s in chunk]
                sums, counts = scoring.continuation_logprobs(model, enc)
                loss_sum -= float(sums.sum())
                tokens += int(counts.sum())
            out = metrics.mean_squad(answers, golds)
            out["loss"] = loss_sum / max(tokens, 1)
            return out
        correct, loss_sum = 0, 0.0
        for chunk, enc in chunks:
            scores = scoring.candidate_scores(model, enc)
            correct += int((scoring.predict(scores).cpu() == enc.correct).sum())
            loss_sum += float(scoring.classification_loss(scores, enc.correct)) * len(chunk)
        return {"accuracy": correct / n, "loss": loss_sum / n}

    def evaluate(self, params: Params, H: Params | None = None, split: str = "eval") -> dict[str, float]:
        """The eval split's metric and loss (reported), and the dev split's (for selection)
        as ``dev_*``; ``split="dev"`` returns the dev split's under the plain names."""
        if split not in ("eval", "dev"):
            raise ValueError(f"split must be eval or dev, not {split!r}")
        with torch.no_grad(), self.fm.bind(params) as model:
            out = self._evaluate_split(model, split)
            out = {("eval_loss" if k == "loss" else k): v for k, v in out.items()}
            if split == "eval" and self.cfg.n_dev > 0:
                out.update({f"dev_{k}": v for k, v in self._evaluate_split(model, "dev").items()})
        return out

    # -- export ------------------------------------------------------------------------------
    def tokenizer_sha256(self) -> str:
        """sha256 of the tokenizer's full definition (the fast tokenizer's JSON, else its
        vocabulary and special tokens): the pack records it, export checks it."""
        import hashlib
        import json

        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is not None:
            text = backend.to_str()
        else:
            text = json.dumps({"vocab": self.tokenizer.get_vocab(),
                               "special": self.tokenizer.special_tokens_map}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def base_info(self) -> dict:
        return {"model": self.cfg.model, "revision": self.cfg.revision,
                "gguf": self.source.gguf, "tokenizer_sha256": self.tokenizer_sha256()}

    def save_model(self, params: Params, out_dir: Path) -> list[str]:
        """A ``save_pretrained`` folder (weights, config, tokenizer) holding ``params``.

        The base model is loaded again (frozen tensors, ties and config come from it) and each
        master, chunks included, is copied into its tensor; the copy is checked bit for bit
        against ``params`` before anything is saved.
        """
        from .. import models
        from ..zo import params_sha256

        model = models.load_model(self.source)
        named = dict(model.named_parameters())
        with torch.no_grad():
            for name, t in zip(self.fm.names, params):
                base, _, rows = name.partition("[")
                dst = named[base]
                if rows:
                    a, b = (int(x) for x in rows.rstrip("]").split(":"))
                    dst = dst[a:b]
                dst.copy_(t)
        if params_sha256(self.fm.masters_of(model)) != params_sha256(params):
            raise RuntimeError("export: the saved model's weights differ from the rebuilt ones")
        models._quiet()
        model.save_pretrained(out_dir)
        self.tokenizer.save_pretrained(out_dir)
        return sorted(p.name for p in Path(out_dir).iterdir())

    # -- artefacts ---------------------------------------------------------------------------
    def describe(self) -> dict:
        return {
            "model": self.cfg.model, "source": self.source.path, "gguf": self.source.gguf,
            "dataset": self.cfg.dataset,
            "num_params": self.num_params(), "tensors": len(self.fm.names),
            "tied": [self.fm.names[i] for i in sorted(self.fm.tied)],
            "forward_dtype": str(self.dtype).replace("torch.", ""), "device": str(self.device),
            "splits": {k: len(getattr(self.splits, k)) for k in ("train", "dev", "eval")},
        }

    def write_artifacts(self, out_dir: Path) -> None:
        labels = self._labels()
        counts = label_counts(self.parts, labels) if labels is not None else None
        clients = [{"client": c, "size": int(len(p)),
                    **({"labels": {str(k): v for k, v in counts[c].items()}} if counts else {})}
                   for c, p in enumerate(self.parts)]
        io.atomic_write_json(Path(out_dir) / "clients.json", {
            "partition": self.cfg.partition,
            "alpha": self.cfg.alpha if self.cfg.partition == "dirichlet" else None,
            "data_seed": self.cfg.data_seed,
            "label_skew": label_skew(self.parts, labels) if labels is not None else None,
            "candidates": list(self.spec.verbalizers) if self.spec.verbalizers else None,
            "clients": clients,
            **self.describe(),
        })
