"""pebench: a benchmark suite for parameter-efficient transfer learning of Vision Transformers.

Folders and import names (``pyproject.toml``'s ``package-dir``)::

    benchmark/  -> pebench            the core
    methods/    -> pebench.methods    one file per method plugin (+ the catalog, the peft bridge)
    datasets/   -> pebench.datasets   the task registry: suites, task specs, loaders, caches

Inside the core, layers import only downward:

- contracts: ``errors``, ``registry``, ``method`` (the plugin protocol and ``prepare``), ``vit``
  and ``layers`` (what plugins build on), ``results`` (the row schema and store), ``budget`` (its
  types in ``budget_types``, budget files in ``budget_file``);
  ``conformance`` checks a plugin against the contract;
- the run pipeline: ``run`` (one run: its spec, options and ``execute``), ``data``, ``train``,
  ``metrics``, ``device`` (the device and the process settings runs and measurements share), on
  ``backbones/`` (timm backbones and weights, the VideoMAE layout, safe
  checkpoint reading);
- ``sweep/``: planning (``plan``), ``dispatch``, running ``markers``, the ``worker`` process,
  ``executors`` (local, Slurm, Ray) and ``engines/`` (one module per engine: its flags,
  options, checks and job info), ``ddp`` and ``status``;
- ``report/``: aggregation, column table, markdown, plots, reported numbers (never torch);
- entry points: ``cli`` (the table of commands and the error handler) and ``commands/``, one
  module per command (``run``, ``list``, ``prepare``, ...; shared option helpers in its
  ``_``-prefixed modules), on what they call (``listing``, ``bench``, ``estimate``,
  ``pretrain``, ``submission/``).

``tests/test_architecture.py`` enforces these rules on every import, lazy ones included. Importing
:mod:`pebench` is cheap: torch and timm are imported only by the modules that need them.
"""

__version__ = "0.1.0"
