"""The report subsystem: turn result rows into ``leaderboard.md``, ``results.csv`` and plots.

It reads the validated run rows under ``<results>/runs/`` (and the published numbers in
``<results>/reported.csv``), aggregates them per suite and configuration, and renders the
leaderboard text and figures. Data flows one way, one module per step:

* :mod:`~pebench.report.sources`: which results folders are read, how the generated text names
  them, and where the outputs of a report on them go;
* :mod:`~pebench.report.aggregate`: read the rows; seed values, suite and group means and the
  per-row summary (:class:`~pebench.report.aggregate.Entry`) of one configuration on one suite;
* :mod:`~pebench.report.tables`: one :class:`~pebench.report.tables.SuiteTable` per suite
  (filtering, superseded reruns, status counts, ranking);
* :mod:`~pebench.report.columns`: the declarative table of leaderboard columns and the cell
  formatters;
* :mod:`~pebench.report.markdown`: the text of ``leaderboard.md``; every Markdown table of
  pebench is written by :mod:`~pebench.report.mdtable` (its cells made inert);
* :mod:`~pebench.report.plots`: the accuracy-vs-cost figures (PNG and PDF, for print), their
  Pareto fronts and seed error bars; :mod:`~pebench.report.labels` lays out their labels;
* :mod:`~pebench.report.reported`: published numbers, rendered in their own section;
* :mod:`~pebench.report.export`: paper tables (``pebench export``): LaTeX, Markdown, tidy CSV;
* :mod:`~pebench.report.commit`: writes a set of files as one unit (a journal, then renames);
* :mod:`~pebench.report.leaderboard`: the entry points ``generate`` and ``is_stale``.

Rows are plain dicts from the store to the outputs (no data frame). The subsystem imports only
the standard library, numpy, scipy, matplotlib (Agg canvas, never pyplot) and the torch-free
``pebench.results``, ``pebench.datasets`` and ``pebench.errors``. It never imports torch, timm
or the run pipeline (``pebench.run``, ``pebench.train``, ``pebench.data``, ``pebench.sweep``,
``pebench.cli``), so a leaderboard can be rebuilt on a machine without an accelerator stack.
"""
