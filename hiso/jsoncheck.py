"""Strict-JSON check of a results tree: every ``.json`` file and every line of every ``.jsonl``
file must parse with a parser that rejects ``NaN`` and ``Infinity`` (what the project promises:
non-finite values are written as null, see :func:`hiso.io.strict`).

    python -m hiso.jsoncheck results/          # prints the counts, then one line per failure

Exit status 0 when everything parses, 1 when something does not, 2 when the path is missing.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _reject(token: str):
    raise ValueError(f"non-standard JSON constant {token}")


def loads_strict(text: str):
    """``json.loads`` that refuses NaN, Infinity and -Infinity."""
    return json.loads(text, parse_constant=_reject)


def check_tree(root: Path | str) -> tuple[int, int, list[str]]:
    """(files checked, documents parsed, failures as 'path[:line]: why') under ``root`` (or of
    ``root`` itself when it is a file). A ``.jsonl`` file's empty last line is not a document."""
    root = Path(root)
    files = [root] if root.is_file() else sorted(
        p for p in root.rglob("*") if p.suffix in (".json", ".jsonl") and p.is_file())
    docs, failures = 0, []
    for p in files:
        try:
            text = p.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            failures.append(f"{p}: unreadable ({exc})")
            continue
        pieces = [(i + 1, line) for i, line in enumerate(text.splitlines())] if p.suffix == ".jsonl" \
            else [(0, text)]
        for lineno, doc in pieces:
            try:
                loads_strict(doc)
                docs += 1
            except ValueError as exc:  # JSONDecodeError is a ValueError
                failures.append(f"{p}{f':{lineno}' if lineno else ''}: {exc}")
    return len(files), docs, failures


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print("usage: python -m hiso.jsoncheck PATH", file=sys.stderr)
        return 2
    root = Path(args[0])
    if not root.exists():
        print(f"hiso.jsoncheck: error: {root}: no such file or directory", file=sys.stderr)
        return 2
    n_files, n_docs, failures = check_tree(root)
    for f in failures:
        print(f)
    print(f"{n_files} JSON files ({n_docs} documents) under {root}: {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
