"""Loading causal language models (and their tokenizers) by hub name or local path.

One entry point, :func:`load_causal_lm`, for every model the suite runs: ``facebook/opt-125m``
... ``facebook/opt-2.7b``, Qwen2.5, SmolLM2, Llama-3.2, or a directory written by
``save_pretrained`` (the tiny fixture models of the tests and of the CPU tier go through exactly
this path). Weights are always loaded in float32: they become the fp32 master weights; a lower
forward precision is applied per forward by :mod:`hiso.module_zo`, never to the masters.

Offline behaviour: before ``transformers`` is even imported, a hub name is looked up in the
local cache (``HF_HOME`` / ``cache_dir``). When it is not there and the hub cannot be used
(``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` set, or the endpoint does not answer within two
seconds), loading fails at once with a :class:`~hiso.errors.UserError` naming the model and the
two ways to provide it, instead of the libraries' minute of retries.

``trust_remote_code`` is always False and no token is ever passed: gated models (Llama) read
``HF_TOKEN`` from the environment through ``huggingface_hub`` itself.

Command line (for the pipeline, which has no hub): ``python -m hiso.models tiny --out DIR``
builds the randomly initialised tiny OPT and word-level tokenizer of :mod:`hiso.text.fixtures`,
with a vocabulary covering a text task's prompts and candidates.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from .errors import UserError

_TRUE = {"1", "true", "yes", "on"}
PROBE_TIMEOUT = 2.0  # seconds; an unreachable hub must not cost the libraries' retry minute


def offline_mode() -> bool:
    """True when the environment forbids hub access (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE)."""
    return any(os.environ.get(k, "").strip().lower() in _TRUE
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hf_home() -> str:
    return os.environ.get("HF_HOME") or str(Path("~/.cache/huggingface").expanduser())


def _hub_reachable(timeout: float = PROBE_TIMEOUT) -> bool:
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _looks_like_path(source: str) -> bool:
    """Hub ids are ``name`` or ``owner/name``; anything else with slashes is meant as a path."""
    return (source.startswith(("/", "./", "../", "~")) or source.count("/") > 1
            or (os.sep != "/" and os.sep in source))


def _cached(repo_id: str, revision: str | None, cache_dir: str | None) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        hit = try_to_load_from_cache(repo_id, "config.json", cache_dir=cache_dir, revision=revision)
    except Exception:  # an invalid repo id, an unreadable cache: treat as not cached
        return False
    return isinstance(hit, str)


def _how_to_provide(name: str) -> str:
    return (f"Provide it: download it once with hub access and the same HF_HOME (now {hf_home()}), "
            f"e.g. `hf download {name}` or `python -c \"from transformers import AutoModelForCausalLM, "
            f"AutoTokenizer; AutoModelForCausalLM.from_pretrained('{name}'); "
            f"AutoTokenizer.from_pretrained('{name}')\"`; or set task.model to a local directory "
            f"holding config.json, the weights and the tokenizer files (save_pretrained)")


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: ``path`` (a local directory or a hub id), ``local_only``."""

    name: str
    path: str
    local_only: bool
    revision: str | None = None
    cache_dir: str | None = None


def resolve_source(name: str, revision: str | None = None, cache_dir: str | None = None) -> ModelSource:
    """Decide where ``name`` loads from, failing fast (UserError) when it cannot be loaded."""
    if not name or not isinstance(name, str):
        raise UserError("task.model: expected a hub model name or a local directory")
    local = Path(name).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise UserError(f"model {name}: directory has no config.json (write it with "
                            f"model.save_pretrained(DIR) and tokenizer.save_pretrained(DIR))")
        return ModelSource(name, str(local), True, None, cache_dir)
    if local.exists():
        raise UserError(f"model {name}: is a file; expected a directory or a hub model name")
    if _looks_like_path(name):
        raise UserError(f"model {name}: no such directory. {_how_to_provide(name)}")
    cached = _cached(name, revision, cache_dir)
    if offline_mode():
        if not cached:
            raise UserError(f"model {name}: not in the local Hugging Face cache and the hub is "
                            f"disabled (HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE). {_how_to_provide(name)}")
        return ModelSource(name, name, True, revision, cache_dir)
    if not cached and not _hub_reachable():
        raise UserError(f"model {name}: not in the local Hugging Face cache and the hub "
                        f"cannot be reached. {_how_to_provide(name)}")
    return ModelSource(name, name, False, revision, cache_dir)


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_tokenizer(src: ModelSource):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(src.path, revision=src.revision, cache_dir=src.cache_dir,
                                            local_files_only=src.local_only, trust_remote_code=False)
    except Exception as exc:
        raise UserError(f"model {src.name}: cannot load its tokenizer ({_one_line(exc)}). "
                        f"{_how_to_provide(src.name)}") from None
    if tok.pad_token_id is None and tok.eos_token_id is None:
        raise UserError(f"model {src.name}: tokenizer has neither a pad nor an eos token")
    return tok


def load_model(src: ModelSource):
    """The causal LM in float32 on the CPU, in eval mode (dropout off: forwards deterministic)."""
    import torch
    from transformers import AutoModelForCausalLM

    _quiet()
    try:
        model = AutoModelForCausalLM.from_pretrained(
            src.path, revision=src.revision, cache_dir=src.cache_dir,
            local_files_only=src.local_only, trust_remote_code=False, dtype=torch.float32)
    except Exception as exc:
        raise UserError(f"model {src.name}: cannot load it ({_one_line(exc)}). "
                        f"{_how_to_provide(src.name)}") from None
    return model.eval()


def _quiet() -> None:
    """No per-tensor progress bars in run logs (transformers draws one per load and save)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def load_causal_lm(name: str, revision: str | None = None, cache_dir: str | None = None):
    """(model, tokenizer, source) for a hub name or a local directory; see the module doc."""
    src = resolve_source(name, revision, cache_dir)
    tok = load_tokenizer(src)
    return load_model(src), tok, src


# -- the tiny fixture model for the CPU tier -------------------------------------------------
def build_tiny(out: str | os.PathLike, task: str = "synthetic", seed: int = 0, hidden: int = 32,
               layers: int = 2, heads: int = 2, ffn: int = 64, max_pos: int = 128,
               data_dir: str | None = None) -> Path:
    """A random tiny OPT + word-level tokenizer covering ``task``'s prompts, saved to ``out``."""
    from .text import data, fixtures
    from .text.templates import get_task

    spec = get_task(task)
    texts: list[str] = list(spec.verbalizers or ())
    for split in (spec.train_split, spec.eval_split):
        for s in data.load_examples(spec, split, data_dir=data_dir):
            texts.append(spec.encode(s))
            texts.extend(s.candidates or s.golds)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _quiet()
    tok = fixtures.build_tiny_tokenizer(fixtures.words_in(texts))
    fixtures.build_tiny_opt(tok, out, seed=seed, hidden=hidden, layers=layers, heads=heads,
                            ffn=ffn, max_pos=max_pos)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hiso.models", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("tiny", help="build the tiny random OPT + tokenizer used by the CPU tier")
    t.add_argument("--out", required=True)
    t.add_argument("--task", default="synthetic", help="text task whose words the vocabulary covers")
    t.add_argument("--data-dir", default=None)
    t.add_argument("--seed", type=int, default=0)
    for k, v in (("hidden", 32), ("layers", 2), ("heads", 2), ("ffn", 64), ("max-pos", 128)):
        t.add_argument(f"--{k}", type=int, default=v)
    args = p.parse_args(argv)
    try:
        out = build_tiny(args.out, args.task, args.seed, args.hidden, args.layers, args.heads,
                         args.ffn, args.max_pos, args.data_dir)
    except UserError as exc:
        print(f"hiso.models: error: {exc}", file=sys.stderr)
        return 2
    print(f"{out}: tiny OPT for task {args.task}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
