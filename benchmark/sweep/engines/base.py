"""What every executor engine is: its own flags and options, its checks, its executor, its jobs.

An engine (``local``, ``slurm``, ``ray``, or a plugin's) is a frozen dataclass subclassing
:class:`Engine`. Its fields declared with :func:`flag` are the ``pebench run`` options only it
accepts (given with another engine they are refused in one line); :attr:`Engine.place` holds
what every engine gets (``--max-parallel``, ``--device``, ``--nproc-per-run``). It checks its
values in :meth:`Engine.validate` (before anything is planned), builds its executor in
:meth:`Engine.make` and tells a worker which job it runs in with :meth:`Engine.job_info`.
Importing an engine imports no engine package (submitit, Ray) and no torch: ``pebench --help``
lists every engine's flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pebench.errors import PebenchError

INSTALL_HINT = "pip install 'pebench[cluster]'"


class ExecutorError(PebenchError, ValueError):
    """Bad executor options or a missing engine; the message names the option and the fix."""


def require(module: str, executor: str) -> Any:
    """Import an optional engine, or raise :class:`ExecutorError` with the install hint."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ExecutorError(
            f"--executor {executor} needs the {module!r} package, which is not installed "
            f"({err}); install it with: {INSTALL_HINT}"
        ) from err


def flag(name: str, help: str, parse: type | None = None, elsewhere: str = "") -> Any:
    """An option only this engine accepts: a dataclass field (default ``None``: not given).

    Args:
        name: the command-line flag (``--time-min``); its dest must be the field's name.
        help: its help text (starting with the engine's name, e.g. ``"slurm: partition"``).
        parse: the argparse type (``int``, ``float``; default: a string).
        elsewhere: appended to the one-line refusal when the flag is given with another engine
            (e.g. what that engine offers instead).
    """
    meta = {"flag": name, "help": help, "type": parse, "elsewhere": elsewhere}
    return field(default=None, metadata=meta)


def at_least(flag_name: str, value: float | None, bound: float) -> None:
    """Refuse ``value`` below ``bound`` (``None``: not given, accepted).

    Raises:
        ExecutorError: ``"{flag} must be >= {bound}, got {value}"``.
    """
    if value is not None and value < bound:
        raise ExecutorError(f"{flag_name} must be >= {bound}, got {value}")


@dataclass(frozen=True)
class Place:
    """What every engine is told: parallelism, the runs' device, processes per run."""

    max_parallel: int | None = None
    device: str = "auto"
    nproc_per_run: int = 1


@dataclass(frozen=True)
class Engine:
    """One executor engine with its options (see the module docstring).

    Subclasses set :attr:`name`, declare their flags with :func:`flag` and override
    :meth:`make`; :meth:`validate`, :meth:`gpus` and :meth:`job_info` as they need.
    """

    #: the ``--executor`` value (and the rows' ``executor`` column)
    name: ClassVar[str] = ""
    #: the flag of this engine's GPU request (named when DDP asks for more GPUs than it)
    gpu_flag: ClassVar[str] = ""
    place: Place = field(default_factory=Place)

    @classmethod
    def flags(cls) -> list[dataclasses.Field]:
        """This engine's own options, in declaration order."""
        return [f for f in dataclasses.fields(cls) if "flag" in f.metadata]

    @classmethod
    def add_arguments(cls, group: argparse._ArgumentGroup, seen: set[str]) -> None:
        """Add this engine's flags to ``pebench run`` (those in ``seen`` are there already)."""
        for f in cls.flags():
            meta = f.metadata
            if meta["flag"] not in seen:
                seen.add(meta["flag"])
                group.add_argument(meta["flag"], type=meta["type"], help=meta["help"])

    def gpus(self) -> float:
        """GPUs requested per run (0: none asked for, or decided by the device)."""
        return 0

    def validate(self) -> None:
        """Refuse bad values and combinations before anything runs (call ``super()`` last).

        Raises:
            ExecutorError: naming the option and what is allowed.
        """
        place = self.place
        if self.gpus() and place.device == "cpu":
            raise ExecutorError("--device cpu cannot be combined with a GPU request")
        n = place.nproc_per_run
        at_least("--nproc-per-run", n, 1)
        if n == 1 or place.device == "cpu":
            return
        if place.device.startswith("cuda:"):
            raise ExecutorError(
                f"--nproc-per-run {n} puts rank r on the r-th visible GPU; --device "
                f"{place.device} names one GPU: use --device cuda (choose the GPUs with "
                "CUDA_VISIBLE_DEVICES)"
            )
        self.check_ddp(n)

    def check_ddp(self, nproc: int) -> None:
        """``--nproc-per-run`` > 1 on GPUs: one GPU per process (nccl).

        Raises:
            ExecutorError: more processes per run than this engine's GPU request.
        """
        gpus = self.gpus()
        if gpus and nproc > gpus:
            raise ExecutorError(
                f"--nproc-per-run {nproc} needs {nproc} GPUs per run (nccl: one per process); "
                f"{self.gpu_flag} is {gpus:g}"
            )

    def make(self) -> Any:
        """The executor (a context manager with ``submit``, ``wait``, ``result``, ``cancel``)."""
        raise NotImplementedError

    @staticmethod
    def job_info() -> tuple[str, str]:
        """``(job_id, log_path)`` of the engine job the calling worker runs in."""
        return "", ""


__all__ = [
    "INSTALL_HINT",
    "Engine",
    "ExecutorError",
    "Place",
    "at_least",
    "flag",
    "require",
]
