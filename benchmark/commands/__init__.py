"""The ``pebench`` commands: one module per command, each the same small interface.

A command module (``run.py``, ``list.py``, ...) exposes:

- ``NAME``: the word after ``pebench`` (``"run"``);
- ``add_parser(subparsers) -> argparse.ArgumentParser``: adds its subcommand and its options;
  building a parser imports nothing heavy (``pebench --help`` and ``pebench list methods`` never
  import torch);
- ``main(args) -> int``: runs it and returns the exit code. Bad input raises
  :class:`pebench.errors.PebenchError`; :mod:`pebench.cli` turns it into one
  ``pebench: error: ...`` line and exit 2.

:mod:`pebench.cli` holds the table of built-in commands (name -> module) and the error handler;
third-party commands register under the entry-point group ``pebench.commands`` (``name =
package.module``). Command modules import nothing from each other: what several share lives in
the ``_``-prefixed helpers (``_plan``: which runs are selected; ``_args``: argument types and the
options of a run; ``_results``: the ``--results`` folders of the report commands; ``_output``:
progress lines, summaries and exit codes; ``_precision``: ``estimate --precision``). Nothing
outside this package and :mod:`pebench.cli` imports from it (``tests/test_architecture.py``).
"""
