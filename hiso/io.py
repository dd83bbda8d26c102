"""Atomic file writes and small JSON helpers."""

from __future__ import annotations

import json
import math
import os
import secrets
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write to a temporary file in the same directory, fsync, then rename over ``path``.

    The file is created with mode 0666 less the process umask, like any other output (a
    ``tempfile.mkstemp`` file would be 0600 whatever the umask, unreadable to collaborators).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_tmp(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _create_tmp(path: Path) -> tuple[int, str]:
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"{path}: no free temporary name")


def atomic_write_text(path: Path | str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path | str, obj: Any) -> None:
    atomic_write_text(path, json.dumps(strict(obj), indent=2, sort_keys=True, allow_nan=False) + "\n")


def read_jsonl(path: Path | str) -> list[dict]:
    """Parse the records of a JSON-lines file the project wrote (non-finite values restored).

    A torn last line (from a killed writer, or a write that hit a full disk) is dropped; a
    damaged line before the last is a UserError naming the file and line.
    """
    from .errors import UserError

    path = Path(path)
    if not path.exists():
        return []
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise UserError(f"{path}: damaged (not UTF-8 text); delete the run directory to start "
                        f"over") from None
    out = []
    for i, line in enumerate(lines):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            rec = None
        if not isinstance(rec, dict):
            if i == len(lines) - 1:
                break  # torn by an interrupted append
            raise UserError(f"{path}: line {i + 1} is damaged (not a JSON record); delete the run "
                            f"directory to start over")
        out.append(restore_non_finite(rec))
    return out


def load_json(path: Path | str, remedy: str | None = None) -> dict:
    """A JSON object the project wrote, non-finite values restored (see :func:`strict`). A
    damaged one is a UserError naming the file, followed by ``remedy`` (what to do) if given."""
    return restore_non_finite(read_mapping(path, json.loads, "a JSON object", remedy))


def read_mapping(path: Path | str, parse, what: str, remedy: str | None = None,
                 errors: tuple[type[Exception], ...] = ()) -> dict:
    """``parse`` (e.g. ``json.loads``) of a file the project wrote, which must be a mapping: a
    file that is not UTF-8, does not parse (ValueError or one of ``errors``) or holds something
    else is a UserError "PATH: damaged (not WHAT); REMEDY". A missing file is an OSError."""
    from .errors import UserError

    try:
        obj = parse(Path(path).read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, *errors):
        obj = None
    if not isinstance(obj, dict):
        raise UserError(f"{path}: damaged (not {what})" + (f"; {remedy}" if remedy else ""))
    return obj


def dumps_line(obj: Any) -> str:
    return json.dumps(strict(obj), sort_keys=True, allow_nan=False) + "\n"


NON_FINITE = "non_finite"


def strict(obj: Any) -> Any:
    """``obj`` with every NaN or infinity replaced by null, so that strict JSON readers accept
    it. A mapping at the top says which: ``non_finite`` maps each replaced value's dotted path
    to "nan", "inf" or "-inf" (and :func:`restore_non_finite` puts them back)."""
    found: dict[str, str] = {}

    def walk(x, path):
        if isinstance(x, float) and not math.isfinite(x):
            found[path] = "nan" if x != x else ("inf" if x > 0 else "-inf")
            return None
        if isinstance(x, dict):
            return {k: walk(v, f"{path}.{k}" if path else str(k)) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [walk(v, f"{path}.{i}" if path else str(i)) for i, v in enumerate(x)]
        return x

    out = walk(obj, "")
    if found and isinstance(out, dict):
        out[NON_FINITE] = {**out.get(NON_FINITE, {}), **found}
    return out


def restore_non_finite(rec: dict) -> dict:
    """Undo :func:`strict` on a record read back: the listed nulls become their floats again."""
    for path, value in (rec.pop(NON_FINITE, None) or {}).items():
        *parents, last = path.split(".")
        node = rec
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node[int(last)] = float(value)
        else:
            node[last] = float(value)
    return rec


def run_dir(path: Path | str) -> Path:
    """A run directory, given it or a file inside it (e.g. its summary.json)."""
    p = Path(path)
    return p if p.is_dir() else p.parent


def read_run(path: Path | str) -> tuple[Path, dict, dict, list[dict]]:
    """(directory, resolved config, summary, metrics records) of a finished run directory."""
    import yaml

    from .errors import UserError

    d = run_dir(path)
    for name in ("config.yaml", "summary.json", "metrics.jsonl"):
        if not (d / name).is_file():
            raise UserError(f"{d / name}: missing (not a finished run directory)")
    cfg = yaml.safe_load((d / "config.yaml").read_text())
    return d, cfg, load_json(d / "summary.json"), read_jsonl(d / "metrics.jsonl")


def atomic_write_tensors(path: Path | str, tensors: list, metadata: dict[str, str] | None = None) -> None:
    """A list of tensors as a safetensors file (keys ``00000``, ``00001`` ... in list order).

    Each tensor is copied first: the masters may be views sharing one storage (a chunked
    embedding), which safetensors refuses to write as they are.
    """
    from safetensors.torch import save

    data = {f"{i:05d}": t.detach().to("cpu").contiguous().clone() for i, t in enumerate(tensors)}
    atomic_write_bytes(path, save(data, metadata=metadata))


def read_tensors(path: Path | str) -> list:
    """The list written by :func:`atomic_write_tensors`, in its order."""
    from safetensors.torch import load

    data = load(Path(path).read_bytes())
    return [data[k] for k in sorted(data)]
