"""The root of every error pebench reports to a user as one line (``pebench: error: ...``, exit 2).

Each subsystem derives its own class from :class:`PebenchError` (and from the builtin exception
its callers expect, e.g. ``ValueError``), so the CLI catches user errors in one place and a
programming error is never mistaken for bad input. Importing this module imports nothing.
"""

from __future__ import annotations


class PebenchError(Exception):
    """Bad input: an unknown name, a bad value, a missing or malformed file (message says which)."""


class UserError(PebenchError, ValueError):
    """A bad command-line value that no subsystem owns (e.g. ``--tflops 0``)."""


__all__ = ["PebenchError", "UserError"]
