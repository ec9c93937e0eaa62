"""The report: every initialisation on every task and label fraction, over seeds.

PCRL (Zhou et al., ICCV 2021) compares initialisations — random (``scratch``), Models
Genesis (``genesis``, restoration only), a MoCo v2 style contrastive baseline (``moco``) and
PCRL (``pcrl``) — fine-tuned on each task of the Models Genesis benchmark (NCC, LCS, BMS)
and, in PCRL's 2D setting, on Chest14 (the 14 ChestX-ray14 findings, Wang et al., CVPR 2017;
headline ``auc_mean``, the mean ROC AUC over the findings) with a fraction of the training
labels (e.g. 10 %, 20 %, 50 %, 100 %) and several seeds (docs/method.md, "Protocol: pretrain,
then fine-tune"). Every task gets the same table, paired table, verdict and plot.

One module per job, each using only those above it:

- :mod:`pcrl.report.runs` reads and checks the evaluate stage's ``metrics.json`` files;
- :mod:`pcrl.report.statistics` reduces a cell over seeds and pairs two cells by seed
  (bootstrap and Student-t intervals of the mean difference);
- :mod:`pcrl.report.verdicts` decides what a comparison allows one to say ("better",
  "worse" or "cannot tell", and why) and writes the verdict sentences;
- :mod:`pcrl.report.summary` builds the nested summary (layout in its docstring);
- :mod:`pcrl.report.context` states where the numbers come from (the report's header);
- :mod:`pcrl.report.curves` reads the learning and probe curves the training stages logged;
- :mod:`pcrl.report.render` writes the text of ``report.md``;
- :mod:`pcrl.report.figures` draws the figures, :mod:`pcrl.report.html` the one-page HTML;
- :mod:`pcrl.report.files` writes the folder: markdown, HTML, JSON, CSVs and figures.

This package re-exports what its callers use.
"""

from __future__ import annotations

from pcrl.report.files import write_report
from pcrl.report.render import comparison_rows, render_markdown
from pcrl.report.runs import numbers_run, read_metrics_json, record_run
from pcrl.report.statistics import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, CONFIDENCE, bootstrap_interval, t_interval
from pcrl.report.summary import INIT_ORDER, summarise
from pcrl.report.verdicts import MIN_PAIRED_SEEDS, fraction_label, paired_difference, verdict

__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "BOOTSTRAP_SEED",
    "CONFIDENCE",
    "INIT_ORDER",
    "MIN_PAIRED_SEEDS",
    "bootstrap_interval",
    "comparison_rows",
    "fraction_label",
    "numbers_run",
    "paired_difference",
    "read_metrics_json",
    "record_run",
    "render_markdown",
    "summarise",
    "t_interval",
    "verdict",
    "write_report",
]
