"""What a method's code is: a hash over its source files (``method_source``), and pebench's own.

A plugin is named by its distribution and version (``method_origin``), but an author can edit it
without bumping the version; the hash tells the two apart. Definition (issue 24, item 1):

* an entry-point plugin: every file its installed distribution lists (``importlib.metadata``
  ``RECORD``, compiled ``.pyc`` files left out) **and** the ``.py`` files of the package (or the
  file) of the module its entry point names: the second covers editable installs, whose
  ``RECORD`` lists a path hook rather than the sources;
* a built-in method: its method file's code without docstrings or comments (the hash of
  ``ast.unparse`` of the parsed file, docstrings removed), so a docstring edit does not churn
  committed rows;
* a method registered at run time (``peft:`` names included): the code of the file its class is
  defined in (without docstrings) and its origin (``peft==<version>``: a new peft is new code).

A distribution's install records that depend on where or how it was installed (``RECORD``,
``INSTALLER``, ``REQUESTED``, ``direct_url.json``, ``.pth`` path hooks, files outside the
distribution's root such as scripts) are left out, so the same code installed elsewhere, or by
``pebench verify --install``, hashes the same. :func:`source_files` returns the hashed files
themselves, which is what a submission carries (:mod:`pebench.submission`).

Paths enter the hash relative to their root, so the hash does not depend on where the code is
installed. Nothing is imported to compute it except, for a method registered at run time, nothing
at all (its class is already loaded).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import inspect
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

#: hex digits of a source hash
DIGITS = 16


def _digest(items: Iterable[tuple[str, bytes]]) -> str:
    """One hash over ``(name, content)`` pairs, in name order."""
    h = hashlib.sha256()
    for name, content in sorted(items):
        h.update(name.encode() + b"\0" + hashlib.sha256(content).digest())
    return h.hexdigest()[:DIGITS]


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b"<unreadable>"


def code_without_docstrings(source: str) -> str:
    """``source`` re-printed from its syntax tree without docstrings (comments never survive).

    Falls back to ``source`` itself when it does not parse.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                if isinstance(body[0].value.value, str):
                    node.body = body[1:] or [ast.Pass()]
    return ast.unparse(tree)


def _module_files(module: str) -> list[tuple[str, bytes]]:
    """The ``.py`` files of ``module``'s top-level package (or its own file), relative names."""
    top = module.split(".")[0]
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return [(f"module:{module}", b"<not found>")]
    if spec is None:
        return [(f"module:{module}", b"<not found>")]
    if spec.submodule_search_locations:
        files = []
        for root in map(Path, spec.submodule_search_locations):
            for path in sorted(root.rglob("*.py")):
                if "__pycache__" not in path.parts:
                    files.append((f"{top}/{path.relative_to(root).as_posix()}", _read(path)))
        return files
    if spec.origin and Path(spec.origin).is_file():
        return [(Path(spec.origin).name, _read(Path(spec.origin)))]
    return [(f"module:{module}", b"<no file>")]


#: install records that say where or how a distribution was installed, not what its code is
INSTALL_RECORDS = frozenset({"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"})


#: the metadata files hashed even when a distribution has no ``RECORD`` (the version is here)
METADATA_FILES = ("METADATA", "entry_points.txt")


def _distribution_files(dist: metadata.Distribution) -> list[tuple[str, bytes]]:
    """Every file ``dist``'s ``RECORD`` lists but its install records, relative names.

    Its ``METADATA`` (name, version) and ``entry_points.txt`` are always among them.
    """
    files = [(f"meta:{name}", (dist.read_text(name) or "").encode()) for name in METADATA_FILES]
    for file in dist.files or ():
        if file.suffix in (".pyc", ".pth") or "__pycache__" in file.parts or ".." in file.parts:
            continue
        if file.name in INSTALL_RECORDS and file.parent.name.endswith(".dist-info"):
            continue
        files.append((f"dist:{file.as_posix()}", _read(Path(str(dist.locate_file(file))))))
    return files


def _entry_point(name: str) -> metadata.EntryPoint | None:
    for ep in metadata.entry_points(group="pebench.methods"):
        if ep.name == name:
            return ep
    return None


def _code(path: Path | None, fallback: str) -> bytes:
    """A built-in file's code without docstrings (``fallback`` when there is no file)."""
    text = _read(path).decode("utf-8", "replace") if path else fallback
    return code_without_docstrings(text).encode()


def source_files(name: str) -> list[tuple[str, bytes]]:
    """What :func:`method_source` hashes for method ``name``: ``(name, content)`` pairs.

    An entry-point plugin's are its files as installed (``dist:<path>`` for a file its
    distribution lists, ``<package>/<path>`` for its module's package); a built-in method's is its
    file's code without docstrings; a method registered at run time, its file's code and origin.

    Raises:
        pebench.registry.RegistryError: unknown method.
    """
    from pebench.methods import PEFT_PREFIX, registry

    if name.startswith(PEFT_PREFIX):
        registry.get(name)  # a peft type is registered when first asked for
    origin = registry.origin_of(name)
    target = registry.target_of(name)
    if target is None:  # registered at run time: the file its class is defined in
        cls = registry.get(name)
        try:
            file = inspect.getsourcefile(cls)
        except TypeError:
            file = None
        where = f"{cls.__module__}:{cls.__qualname__}"
        code = _code(Path(file), where) if file else where.encode()
        return [(Path(file).name if file else "runtime", code), ("origin", origin.encode())]
    module = target.partition(":")[0]
    if origin == "builtin":
        spec = importlib.util.find_spec(module)
        return [(module, _code(Path(spec.origin) if spec and spec.origin else None, module))]
    ep = _entry_point(name)
    dist = getattr(ep, "dist", None)
    files = _distribution_files(dist) if dist is not None else []
    return list(dict(files + _module_files(module)).items())


def source_hash(files: Iterable[tuple[str, bytes]]) -> str:
    """The hash of ``(name, content)`` pairs as :func:`method_source` computes it."""
    return _digest(files)


def method_source(name: str) -> str:
    """The hash of registered method ``name``'s source files (:data:`DIGITS` hex digits).

    Raises:
        pebench.registry.RegistryError: unknown method.
    """
    return _digest(source_files(name))


def pebench_source() -> str:
    """The hash of pebench's own ``.py`` files (the core, the built-in methods and datasets).

    Part of the conformance memo's key: a pass is not reused once the code that checked it (or
    the core a method runs on) changed, even without a version bump (a development checkout).
    """
    import pebench

    files: list[tuple[str, bytes]] = []
    for package in ("pebench", "pebench.methods", "pebench.datasets"):
        spec = importlib.util.find_spec(package)
        for root in map(Path, (spec.submodule_search_locations or []) if spec else []):
            for path in sorted(root.rglob("*.py")):
                if "__pycache__" not in path.parts:
                    files.append((f"{package}/{path.relative_to(root).as_posix()}", _read(path)))
    return _digest(files + [("version", pebench.__version__.encode())])


__all__ = [
    "DIGITS",
    "code_without_docstrings",
    "method_source",
    "pebench_source",
    "source_files",
    "source_hash",
]
