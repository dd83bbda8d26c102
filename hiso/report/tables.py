"""Table writers: Markdown, CSV and LaTeX (booktabs), each implemented once.

A table is a header and rows of cells. Numbers are formatted by the caller (each report has its
own precision rules: :func:`fmt_general` for the convergence tables); the writers only lay the
cells out and escape them, once, for their format. Every report writes its tables through
:func:`write_table`, which adds the footer (commit and tier) and writes ``.md``, ``.csv`` and
``.tex`` side by side, atomically, only once every part is built.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from .. import io

NOT_RUN = "not run (tier {tier})"


def fmt_general(v) -> str:
    """Floats to 4 significant digits (NaN spelled out), everything else as ``str``."""
    if isinstance(v, float):
        return "NaN" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def md_cell(text) -> str:
    """A Markdown table cell: pipes escaped, newlines folded (they would end the row)."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(header: Sequence, rows: Sequence[Sequence], fmt=str) -> str:
    """A GitHub-flavoured Markdown table; ``fmt`` turns each cell into text."""
    lines = ["| " + " | ".join(md_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(md_cell(fmt(c)) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown_frame(df, fmt=fmt_general) -> str:
    """A data frame as a Markdown table (its columns as the header)."""
    cols = list(df.columns)
    return markdown(cols, [[row[c] for c in cols] for _, row in df.iterrows()], fmt)


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
        "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
        "<": r"\textless{}", ">": r"\textgreater{}"}


def tex_escape(text) -> str:
    """Plain text safe inside a LaTeX table cell or caption."""
    return "".join(_TEX.get(ch, ch) for ch in str(text))


def _tex_cell(text: str) -> str:
    # Markdown bold (verdicts) becomes \textbf; everything else is literal text
    s = str(text)
    if len(s) > 4 and s.startswith("**") and s.endswith("**"):
        return r"\textbf{" + tex_escape(s[2:-2]) + "}"
    return tex_escape(s)


def latex(header: Sequence, rows: Sequence[Sequence], caption: str = "", fmt=str,
          label: str | None = None) -> str:
    """A booktabs ``table`` environment (needs ``\\usepackage{booktabs}``)."""
    cols = "l" * len(header)
    lines = [r"\begin{table}[htbp]", r"\centering", r"\small"]
    if caption:
        lines.append(r"\caption{" + tex_escape(caption) + "}")
    if label:
        lines.append(r"\label{" + label + "}")
    lines += [r"\begin{tabular}{" + cols + "}", r"\toprule",
              " & ".join(_tex_cell(h) for h in header) + r" \\", r"\midrule"]
    lines += [" & ".join(_tex_cell(fmt(c)) for c in row) + r" \\" for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def frame_rows(df, fmt=fmt_general) -> tuple[list[str], list[list[str]]]:
    """(header, formatted rows) of a data frame, for :func:`latex`."""
    cols = list(df.columns)
    return cols, [[fmt(row[c]) for c in cols] for _, row in df.iterrows()]


def footer(tier: str | None, commit: str | None) -> str:
    """The line every table ends with: which code and which tier produced it."""
    return f"Generated at commit {commit or 'unknown'}, tier {tier or 'unknown'}."


def write_table(md_path, csv_path, md_text: str, csv_text: str, tex_text: str | None = None,
                tex_path=None) -> None:
    """Write the Markdown, CSV and (``tex_path``, default: ``md_path`` with ``.tex``) LaTeX
    files; the text is built in full before the first file is written."""
    tex_target = Path(tex_path) if tex_path else Path(md_path).with_suffix(".tex")
    io.atomic_write_text(csv_path, csv_text)
    if tex_text is not None:
        io.atomic_write_text(tex_target, tex_text)
    io.atomic_write_text(md_path, md_text)
