"""The ``pebench`` command line: the table of commands and the error handler.

Each command is one module of :mod:`pebench.commands` (``NAME``, ``add_parser``, ``main``); the
built-in ones are named in :data:`BUILTINS`, third-party ones come from the entry-point group
``pebench.commands`` through the same :class:`~pebench.registry.Registry` methods use. Bad input
(unknown names, bad ``--set`` values, missing weights files, bad executor options, malformed
result CSVs) prints one ``pebench: error: ...`` line and exits with 2, before anything is written.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from types import ModuleType

from typing_extensions import override

from pebench import __version__
from pebench.commands._output import EXIT_BROKEN_PIPE, EXIT_INTERRUPTED, EXIT_USAGE
from pebench.errors import PebenchError
from pebench.registry import Registry, RegistryError

#: the top-level ``--help`` text (plain text: argparse prints it as is)
DESCRIPTION = (
    "pebench: parameter-efficient fine-tuning of Vision Transformers, benchmarked under one "
    "versioned budget per suite. Start with `pebench run --method lora` (the demo suite, "
    "offline); `pebench list methods|tasks|suites|budgets` shows what is there, and "
    "`pebench COMMAND --help` the options of each command."
)
#: the built-in commands, in the order ``pebench --help`` lists them: name -> module
BUILTINS = {
    name: f"pebench.commands.{name}"
    for name in (
        "run", "status", "estimate", "list", "params", "check", "bench", "pretrain", "prepare",
        "leaderboard", "export", "submit", "verify", "compare",
    )
}  # fmt: skip
#: what a command module provides (see :mod:`pebench.commands`)
INTERFACE = ("NAME", "add_parser", "main")


class CommandRegistry(Registry[ModuleType]):
    """Command modules by name: the built-in table, then the ``pebench.commands`` entry points."""

    @override
    def check(self, name: str, obj: object, source: str) -> None:
        """A command entry must be a module with ``NAME == name``, ``add_parser`` and ``main``.

        Raises:
            RegistryError: one line naming the entry, what it lacks and what is allowed.
        """
        allowed = f"a module with NAME = {name!r}, add_parser(subparsers) and main(args)"
        if not isinstance(obj, ModuleType):
            raise RegistryError(f"{source} is a {type(obj).__name__}; allowed: {allowed}")
        missing = [a for a in INTERFACE[1:] if not callable(getattr(obj, a, None))]
        if missing or getattr(obj, "NAME", None) != name:
            named = getattr(obj, "NAME", None)
            lacks = f"lacks {', '.join(missing)}" if missing else f"has NAME {named!r}"
            raise RegistryError(f"{source} {lacks}; allowed: {allowed}")


registry = CommandRegistry("command", BUILTINS, group="pebench.commands")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command (imports no model: ``--help`` stays fast).

    The built-in commands come in :data:`BUILTINS` order, then plugin commands by name. A plugin
    command that cannot be loaded, clashes with another name or fails to add its parser is left
    out with one ``pebench: refused ...`` line on stderr: it never disables the other commands.
    """
    p = argparse.ArgumentParser(prog="pebench", description=DESCRIPTION)
    p.add_argument("--version", action="version", version=f"pebench {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for name in BUILTINS:
        registry.get(name).add_parser(sub)
    for name in registry.names():
        if name not in BUILTINS and (problem := _add_plugin(sub, name)):
            print(f"pebench: refused {problem}", file=sys.stderr)
    for problem in registry.problems:
        print(f"pebench: refused {problem}", file=sys.stderr)
    return p


def _add_plugin(sub: argparse._SubParsersAction, name: str) -> str | None:
    """Add a plugin command's parser; the one-line reason it was refused, else ``None``."""
    try:
        registry.get(name).add_parser(sub)
    except RegistryError as err:
        return str(err)
    except Exception as err:  # a plugin's own failure (at import or in add_parser)
        detail = " ".join(f"{type(err).__name__}: {err}".split())
        return f"command {name!r} ({registry.origin_of(name)}) failed: {detail}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pebench`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return registry.get(args.command).main(args)
    except PebenchError as err:
        print(f"pebench: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # Ctrl-C outside a sweep (planning, prepare, leaderboard...)
        print("pebench: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `pebench list tasks | head`: the reader left, nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
