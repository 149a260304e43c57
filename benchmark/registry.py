"""A small named registry: lazy built-ins, entry points, a decorator, "did you mean" errors."""

from __future__ import annotations

import difflib
import importlib
import re
from collections.abc import Callable, Iterable
from importlib import metadata
from typing import Generic, TypeVar

from pebench.errors import PebenchError

T = TypeVar("T")
#: what a registered name may be made of
NAME = re.compile(r"[A-Za-z0-9_:\-]+")


class RegistryError(PebenchError, KeyError):
    """Unknown or duplicate name. ``str()`` gives the full message (KeyError would quote it)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def suggest(name: str, choices: Iterable[str], kind: str) -> str:
    """Build the message for an unknown ``name`` among ``choices``."""
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown {kind} {name!r}.{hint} Available: {', '.join(choices) or '(none)'}"


def entry_point_origin(ep: metadata.EntryPoint) -> str:
    """Where an entry point comes from: ``dist==version``, else ``entry point <value>``."""
    dist = getattr(ep, "dist", None)
    return f"{dist.name}=={dist.version}" if dist is not None else f"entry point {ep.value}"


def _summary(ep: metadata.EntryPoint) -> str:
    """The ``Summary`` line of an entry point's distribution metadata ("" without one)."""
    dist = getattr(ep, "dist", None)
    try:
        summary = dist.metadata.get("Summary") if dist is not None else None
    except Exception:  # broken metadata must never break a listing
        summary = None
    return " ".join(str(summary or "").split())


def check_named_subclass(obj: object, base: type, name: str, source: str) -> None:
    """Refuse a registry entry that is not a subclass of ``base`` whose ``name`` is ``name``.

    The check of the registries of classes (methods, executor engines).

    Raises:
        RegistryError: one line naming the entry, what it is and what is allowed.
    """
    qual = f"{base.__module__}.{base.__name__}"
    allowed = f"a {qual} subclass whose `name` is {name!r}"
    if not (isinstance(obj, type) and issubclass(obj, base)):
        what = "a class" if isinstance(obj, type) else f"a {type(obj).__name__}"
        article = "an" if base.__name__[0] in "AEIOU" else "a"
        raise RegistryError(
            f"{source} is {what}, not {article} {base.__name__} subclass; allowed: {allowed}"
        )
    if obj.name != name:
        raise RegistryError(
            f"{source} declares name {obj.name!r}, not {name!r}; allowed: {allowed}"
        )


def _qualname(obj: object) -> str:
    """``module:Qualname`` of a class or function, else the repr of ``obj``."""
    module, qual = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    return f"{module}:{qual}" if module and qual else repr(obj)


class Registry(Generic[T]):
    """Names to objects, from three sources: a lazy built-in table, entry points, decorators.

    Args:
        kind: what is registered ("method", "task", ...), used in messages.
        builtins: name -> ``"module:attribute"``, imported on first use; a bare ``"module"``
            (no ``:attribute``, as entry points allow) names the module itself.
        group: entry-point group scanned once, on first lookup or listing.
    """

    def __init__(self, kind: str, builtins: dict[str, str] | None = None, group: str | None = None):
        self.kind = kind
        self._lazy = dict(builtins or {})
        self._group = group
        self._loaded: dict[str, T] = {}
        self._origin: dict[str, str] = {name: "builtin" for name in self._lazy}
        self._eps_scanned = group is None
        #: entry-point name -> its distribution's one-line ``Summary`` (metadata, no import)
        self._summary: dict[str, str] = {}
        #: entry points refused when scanned (a clash or an unusable name), one line each: one
        #: bad plugin is reported, never allowed to disable the others
        self.problems: list[str] = []

    # ----------------------------------------------------------------------------- register --
    def register(self, name: str, obj: T | None = None, origin: str = "runtime") -> Callable:
        """Register ``obj`` under ``name`` (usable as a decorator). Duplicate names raise."""

        def deco(o: T) -> T:
            self._scan_entry_points()
            if name in self._lazy or name in self._loaded:
                raise RegistryError(
                    f"duplicate {self.kind} name {name!r}: already registered "
                    f"({self._origin.get(name, 'unknown origin')})"
                )
            how = "at run time" if origin == "runtime" else f"by {origin}"
            self.check(name, o, f"{self.kind} {name!r} registered {how} as {_qualname(o)}")
            self._loaded[name] = o
            self._origin[name] = origin
            return o

        return deco(obj) if obj is not None else deco

    def unregister(self, name: str) -> None:
        """Remove a runtime registration (tests and notebooks)."""
        self._loaded.pop(name, None)
        self._lazy.pop(name, None)
        self._origin.pop(name, None)

    def _scan_entry_points(self) -> None:
        if self._eps_scanned:
            return
        self._eps_scanned = True
        for ep in metadata.entry_points(group=self._group):
            origin = entry_point_origin(ep)
            if ep.name in self._lazy or ep.name in self._loaded:
                self.problems.append(
                    f"duplicate {self.kind} name {ep.name!r}: entry point {ep.value} ({origin}) "
                    f"clashes with the {self._origin[ep.name]} one, which is kept"
                )
            elif not NAME.fullmatch(ep.name):
                self.problems.append(
                    f"{self.kind} entry point {ep.name!r} = {ep.value} ({origin}) is not a usable "
                    "name: letters, digits, '_', '-' and ':' only ('.' selects a preset, ',' "
                    "separates names)"
                )
            else:
                self._lazy[ep.name] = ep.value
                self._origin[ep.name] = origin
                self._summary[ep.name] = _summary(ep)

    def check(self, name: str, obj: object, source: str) -> None:
        """Reject ``obj`` as the entry for ``name`` by raising :class:`RegistryError`.

        Called once per object, before it is returned or cached; the default accepts anything.
        ``source`` says where ``obj`` came from (e.g. ``"method entry point 'x' = m:X
        (dist==1.0)"``) and should start the one-line message.
        """

    def _source(self, name: str) -> str:
        origin = self._origin[name]
        if origin == "builtin":
            return f"builtin {self.kind} {name!r} = {self._lazy[name]}"
        return f"{self.kind} entry point {name!r} = {self._lazy[name]} ({origin})"

    # ------------------------------------------------------------------------------- lookup --
    def names(self) -> list[str]:
        """All registered names, sorted."""
        self._scan_entry_points()
        return sorted(set(self._lazy) | set(self._loaded))

    def origin(self, name: str) -> str:
        """``"builtin"``, ``"dist==version"`` for entry points, or ``"runtime"``."""
        self.get(name)
        return self._origin[name]

    def origin_of(self, name: str) -> str:
        """Like :meth:`origin` but without loading (or checking) the object: cheap listings.

        Raises:
            RegistryError: unknown name (with suggestions).
        """
        self._scan_entry_points()
        if name not in self._origin:
            raise RegistryError(suggest(name, self.names(), self.kind))
        return self._origin[name]

    def target_of(self, name: str) -> str | None:
        """``"module:attribute"`` a name is imported from (``None`` when registered at run time).

        Read from the built-in table or the entry point's metadata: nothing is imported.

        Raises:
            RegistryError: unknown name (with suggestions).
        """
        self.origin_of(name)
        return None if name in self._loaded and name not in self._lazy else self._lazy.get(name)

    def summary_of(self, name: str) -> str:
        """The one-line ``Summary`` of the distribution an entry point comes from ("" if none).

        Metadata only: the entry point's module is not imported.
        """
        self._scan_entry_points()
        return self._summary.get(name, "")

    def is_loaded(self, name: str) -> bool:
        """Whether ``name``'s object was imported (or registered at run time) already."""
        return name in self._loaded

    def __contains__(self, name: str) -> bool:
        return name in self.names()

    def get(self, name: str) -> T:
        """Return the object for ``name``; unknown names raise with suggestions."""
        self._scan_entry_points()
        if name in self._loaded:
            return self._loaded[name]
        if name not in self._lazy:
            raise RegistryError(suggest(name, self.names(), self.kind))
        target = self._lazy[name]
        module_name, _, attr = target.partition(":")
        try:
            module = importlib.import_module(module_name)
            obj = getattr(module, attr) if attr else module
        except (ImportError, AttributeError) as err:
            raise RegistryError(
                f"{self.kind} {name!r} ({self._origin[name]}) could not be loaded from "
                f"{target!r}: {err}"
            ) from err
        self.check(name, obj, self._source(name))
        self._loaded[name] = obj
        return obj
