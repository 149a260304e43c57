"""``pebench verify --install``: the submitted plugin, installed into a fresh virtual environment.

The environment is made with ``python -m venv --without-pip``; it sees the verifier's own
packages (torch, timm, pebench: a ``.pth`` file adds the verifier's site directories) and, in its
own ``site-packages``, exactly the submitted source files laid out as an installed distribution:
the files its ``RECORD`` listed at their paths, its package's modules, its ``METADATA`` and
``entry_points.txt`` in its ``.dist-info`` folder (and a ``RECORD`` listing the same files when
the submitter's had one). So the plugin's ``method_source`` computed there is the submitted one
when, and only when, the submitted files are what the archive holds. Nothing is built, downloaded
or run here: the code runs only in the verification's re-runs, after the maintainer read it.
"""

from __future__ import annotations

import email.parser
import re
import site
import subprocess
import sys
import venv
from collections.abc import Mapping
from pathlib import Path

from pebench.errors import PebenchError

#: top-level names a submission may not install (they would shadow the verifier's own code)
RESERVED = frozenset({"pebench", "benchmark", "methods", "datasets", "torch", "timm"})


class InstallError(PebenchError):
    """A submitted source that cannot be installed as a distribution (one line)."""


def site_packages(python: Path) -> Path:
    """The ``site-packages`` folder of the environment whose interpreter is ``python``."""
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    return Path(subprocess.check_output([str(python), "-c", code], text=True).strip())


def _dist_info(files: Mapping[str, bytes]) -> str:
    """The ``.dist-info`` folder name: from a ``RECORD`` path, else from ``METADATA``."""
    for name in files:
        if name.startswith("dist:"):
            parts = name[5:].split("/")
            if len(parts) > 1 and parts[0].endswith(".dist-info"):
                return parts[0]
    meta = email.parser.BytesParser().parsebytes(files.get("meta:METADATA", b""))
    dist, version = meta.get("Name", ""), meta.get("Version", "")
    if not dist or not version:
        raise InstallError("the submitted METADATA names no distribution and version")
    return f"{re.sub(r'[-_.]+', '_', dist)}-{version}.dist-info"


def layout(files: Mapping[str, bytes]) -> dict[str, bytes]:
    """Relative path in ``site-packages`` -> content, for source files named as in the hash.

    Raises:
        InstallError: a file outside a distribution's layout, or one that would shadow a
            reserved top-level name (:data:`RESERVED`), or the same path with two contents.
    """
    info = _dist_info(files)
    out: dict[str, bytes] = {}
    listed = []
    for name, content in files.items():
        kind, sep, path = name.partition(":")
        if not sep:
            path = name  # a module's package file: <top>/<path>
        elif kind == "dist":
            listed.append(path)
        elif kind == "meta":
            path = f"{info}/{path}"
        else:
            raise InstallError(f"source file {name!r} is not part of an installed distribution")
        top = path.split("/")[0]
        if top in RESERVED or top.split(".")[0] in RESERVED:
            raise InstallError(f"source file {name!r} would shadow {top!r}; not installed")
        if out.setdefault(path, content) != content:
            raise InstallError(f"source file {path!r} is submitted twice with other contents")
    if listed:  # the distribution had a RECORD: the same files are listed again
        out[f"{info}/RECORD"] = "".join(f"{p},,\n" for p in sorted(listed)).encode()
    return out


def make_env(folder: Path, files: Mapping[str, bytes]) -> Path:
    """Create the environment in ``folder`` with ``files`` installed; returns its interpreter.

    Raises:
        InstallError: see :func:`layout`.
    """
    placed = layout(files)  # refused before anything is created
    venv.EnvBuilder(with_pip=False, clear=True, symlinks=sys.platform != "win32").create(folder)
    python = folder / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    target = site_packages(python)
    base = [*site.getsitepackages(), site.getusersitepackages()]
    lines = "".join(f"import site; site.addsitedir({d!r})\n" for d in base if Path(d).is_dir())
    (target / "_pebench_verifier.pth").write_text(lines)
    for rel, content in sorted(placed.items()):
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return python


__all__ = ["RESERVED", "InstallError", "layout", "make_env", "site_packages"]
