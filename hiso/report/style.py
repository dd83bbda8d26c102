"""The one figure style: theme, method colours and names, units, and how figures are saved.

Colours are the Okabe-Ito colour-blind-safe palette, ordered so that neighbouring methods differ
in lightness as well as hue; every method also has its own line style and marker, so a figure
printed in greyscale still tells the methods apart. A method keeps its colour, name, dash and
marker in every figure. Every figure is written as PNG and as PDF (vector, for a paper).
"""

from __future__ import annotations

import io as _io
from pathlib import Path

from .. import io

# Okabe & Ito (2008), "Color universal design"
OKABE_ITO = {"black": "#000000", "orange": "#E69F00", "sky": "#56B4E9", "green": "#009E73",
             "yellow": "#F0E442", "blue": "#0072B2", "vermillion": "#D55E00", "purple": "#CC79A7"}

# method -> (label, colour, dashes (seaborn/matplotlib on-off), marker)
METHODS = {
    "hiso": ("HiSo", OKABE_ITO["blue"], (1, 0), "o"),
    "hiso_oracle": ("HiSo, oracle H", OKABE_ITO["blue"], (1, 0), "o"),
    "hiso_scalar": ("HiSo, scalar H", OKABE_ITO["sky"], (4, 1.5), "v"),
    "decomfl": ("DeComFL (ZO-SGD)", OKABE_ITO["vermillion"], (5, 2), "s"),
    "mezo": ("MeZO (centralised)", OKABE_ITO["purple"], (2, 1), "D"),
    "fedzo": ("FedZO", OKABE_ITO["orange"], (5, 1, 1, 1), "^"),
    "fedavg": ("FedAvg (first order)", OKABE_ITO["black"], (1, 1), "P"),
    "fedadam": ("FedAdam (first order)", OKABE_ITO["green"], (3, 1, 1, 1, 1, 1), "X"),
}
_SPARE = [OKABE_ITO[k] for k in ("sky", "green", "orange", "purple", "yellow", "black")]

# axis labels with their units, the same in every figure
ROUNDS = "rounds"
BYTES = "bytes exchanged (up + down)"


def method_of(name: str) -> str:
    """The method a variant name belongs to (``hiso_nu0.95`` -> ``hiso``; ``lm-decomfl`` ...)."""
    key = str(name).lower()
    for m in sorted(METHODS, key=len, reverse=True):
        if key == m or key.startswith(m + "_") or key.startswith(m + "-") or key.endswith("-" + m):
            return m
    return key


def colour(name: str, index: int = 0) -> str:
    m = method_of(name)
    return METHODS[m][1] if m in METHODS else _SPARE[index % len(_SPARE)]


def label(name: str) -> str:
    m = method_of(name)
    return METHODS[m][0] if name == m and m in METHODS else str(name)


def dashes(name: str):
    m = method_of(name)
    return METHODS[m][2] if m in METHODS else (1, 0)


def marker(name: str) -> str:
    m = method_of(name)
    return METHODS[m][3] if m in METHODS else "o"


def palette(names) -> dict:
    """{name: colour} for seaborn's ``hue``; variants of one method get distinct shades."""
    out, seen = {}, {}
    for i, n in enumerate(sorted(set(names))):
        base = colour(n, i)
        k = seen.get(base, 0)
        seen[base] = k + 1
        out[n] = base if k == 0 else _SPARE[(i + k) % len(_SPARE)]
    return out


def pyplot():
    """matplotlib.pyplot, headless, with the project's theme applied."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper")
    # fonts embedded as TrueType in the PDFs (editable, accepted by publishers)
    matplotlib.rcParams["pdf.fonttype"] = 42
    return plt


def save(fig, out, dpi: int = 150) -> None:
    """Write ``fig`` to ``out`` (its format from the suffix) atomically, then close it."""
    buf = _io.BytesIO()
    fig.savefig(buf, format=Path(out).suffix.lstrip(".") or "png", dpi=dpi)
    io.atomic_write_bytes(out, buf.getvalue())
    import matplotlib.pyplot as plt

    plt.close(fig)
