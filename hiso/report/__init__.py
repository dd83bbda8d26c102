"""Everything that turns run directories into figures and tables; nothing here runs the engine.

Where each output is made:

* :mod:`.runs`        run directories -> one long metrics CSV (``hiso aggregate``)
* :mod:`.tables`      the table writers: Markdown, CSV, LaTeX (booktabs); footers
* :mod:`.style`       the figure theme, method colours / names / dashes, saving PNG + PDF
* :mod:`.published`   the published values (``reference/paper_values.csv``) beside ours
* :mod:`.selection`   learning-rate selection on the dev split (``hiso select``, its table)
* :mod:`.convergence` engine demo and LM tables and figures (``hiso table|figure convergence``)
* :mod:`.digits`      the digits check's tables and figures (``hiso digits table|figure``)
* :mod:`.theory`, :mod:`.theory_figures`  the theory verdict table and figures
  (``hiso theory report``; the analyses live beside the experiments in :mod:`hiso.experiments`)
* :mod:`.large_federation` the large-federation study (``hiso largefed report``)
* :mod:`.diagnostics` HiSo's H beside the metric (``hiso figure-diagnostics``)
* :mod:`.manifest`    the ``reproduce-all`` manifest with provenance (``hiso manifest``)
* :mod:`.cli`         the subcommands' arguments

Importing this package loads no torch (tested): reports read files only.
"""

from .cli import add_commands

__all__ = ["add_commands"]
