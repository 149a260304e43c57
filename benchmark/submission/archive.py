"""One submission file: a deterministic ``.tar.gz`` of plain files listed in ``MANIFEST.json``.

The only code that writes or reads a submission. The reader treats the file as hostile: it
never extracts, imports, executes or unpickles anything from it, and refuses with one
:class:`ArchiveError` line (archive, member, what is wrong) anything but regular files with safe
relative names, within the size limits, each listed in the manifest with its size and SHA-256.
The decompressed stream itself is bounded (no read over the largest member, no stream longer
than the members allow), so a crafted header cannot make it allocate without limit.

Stdlib only; imports nothing of pebench but its error base class and durable writes.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import tarfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pebench import fsio
from pebench.errors import PebenchError

MANIFEST = "MANIFEST.json"
#: the largest member (the manifest aside, see ``MAX_MANIFEST_BYTES``)
MAX_MEMBER_BYTES = 64 * 1024 * 1024
#: all members together, the manifest included
MAX_TOTAL_BYTES = 1024 * 1024 * 1024
#: members in one archive, the manifest included
MAX_MEMBERS = 100_000
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
#: the manifest's ``format``
FORMAT = 1
_ALLOWED = (
    "allowed: a relative POSIX path of 1-255 printable characters, without a '.', '..' or "
    "empty component, a backslash or a drive letter"
)
_SHA256 = re.compile(r"[0-9a-f]{64}")
_KINDS = {
    tarfile.SYMTYPE: "a symbolic link",
    tarfile.LNKTYPE: "a hard link",
    tarfile.DIRTYPE: "a directory",
    tarfile.CHRTYPE: "a character device",
    tarfile.BLKTYPE: "a block device",
    tarfile.FIFOTYPE: "a fifo",
}
#: the most a tar stream spends on one member besides its data (pax header, header, padding)
_OVERHEAD = 4 * tarfile.BLOCKSIZE


class ArchiveError(PebenchError, ValueError):
    """A submission that cannot be written or read (one line: the archive, the member, what)."""


@dataclass(frozen=True)
class Archive:
    """A verified submission: every member is listed in the manifest with its size and SHA-256."""

    path: Path
    sha256: str
    meta: dict[str, Any]
    members: dict[str, bytes]


def _unsafe(name: str) -> str | None:
    """Why ``name`` is not a safe member name (a message naming it), or None."""
    if not name or len(name) > 255:
        problem = f"{len(name)} characters long"
    elif not name.isprintable():
        problem = "a control or unprintable character"
    elif "\\" in name or re.match(r"[A-Za-z]:", name):
        problem = "a backslash or drive letter"
    elif name.startswith("/"):
        problem = "an absolute path"
    elif any(part in ("", ".", "..") for part in name.split("/")):
        problem = "a '.', '..' or empty component"
    else:
        return None
    return f"member {name!r}: unsafe name ({problem}); {_ALLOWED}"


def check_name(name: str) -> str:
    """Return ``name`` if it is a safe archive-relative POSIX path.

    Raises:
        ArchiveError: ``name`` is empty, longer than 255 characters, absolute, has a drive
            letter, a backslash, a control character, or a ``.``, ``..`` or empty component.
    """
    problem = _unsafe(name)
    if problem:
        raise ArchiveError(problem)
    return name


class _Tally:
    """Members counted against the limits, in archive order."""

    def __init__(self, where: str, max_member: int, max_total: int) -> None:
        self.where, self.max_member, self.max_total = where, max_member, max_total
        self.count = self.total = 0

    def add(self, name: str, size: int) -> None:
        self.count += 1
        self.total += size
        cap = MAX_MANIFEST_BYTES if name == MANIFEST else self.max_member
        if self.count > MAX_MEMBERS:
            problem = f"more than {MAX_MEMBERS} members"
        elif size > cap:
            problem = f"{size} bytes; at most {cap} allowed per member"
        elif self.total > self.max_total:
            problem = f"brings the members to {self.total} bytes; at most {self.max_total} allowed"
        else:
            return
        raise ArchiveError(f"{self.where}: member {name!r}: {problem}")


def write_archive(path: str | Path, members: Mapping[str, bytes], meta: Mapping[str, Any]) -> str:
    """Write ``members`` (relative POSIX name -> bytes) and a manifest to a ``.tar.gz``, atomically.

    The manifest (``{"format": 1, "meta": meta, "members": {name: {"sha256", "size"}}}``, sorted
    keys) comes first, the members follow in sorted order; entries have mtime 0, owner 0/0 with
    no names and mode 0o644, the gzip header mtime 0 and no file name: the same input gives the
    same bytes. Returns the SHA-256 (hex) of the archive file.

    Raises:
        ArchiveError: a member name :func:`check_name` refuses or ``MANIFEST.json``, or a member
            or total over the limits :func:`read_archive` applies by default.
    """
    for name in members:
        problem = _unsafe(name) or (f"member {name!r}: reserved" if name == MANIFEST else "")
        if problem:
            raise ArchiveError(f"{path}: {problem}")
    listed = {
        n: {"sha256": hashlib.sha256(d).hexdigest(), "size": len(d)} for n, d in members.items()
    }
    doc = {"format": FORMAT, "meta": dict(meta), "members": listed}
    manifest = json.dumps(doc, sort_keys=True, indent=1).encode("utf-8")
    tally = _Tally(str(path), MAX_MEMBER_BYTES, MAX_TOTAL_BYTES)
    buf = io.BytesIO()
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name, data in [(MANIFEST, manifest), *sorted(members.items())]:
            tally.add(name, len(data))
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    fsio.atomic_write_bytes(path, buf.getvalue())
    return hashlib.sha256(buf.getvalue()).hexdigest()


class _Stream:
    """The decompressed tar stream as tarfile reads it, bounded; remembers the last member."""

    def __init__(self, raw: gzip.GzipFile, where: str, max_read: int, limit: int) -> None:
        self.raw, self.where, self.max_read, self.limit = raw, where, max_read, limit
        self.member: str | None = None

    def after(self) -> str:
        return "before the first member" if self.member is None else f"after member {self.member!r}"

    def read(self, size: int = -1) -> bytes:
        at = self.raw.tell()
        if not 0 <= size <= self.max_read or at + size > self.limit:
            raise ArchiveError(
                f"{self.where}: a header or member of {size} bytes at byte {at} {self.after()}; "
                f"at most {self.max_read} allowed at once, {self.limit} in all"
            )
        return self.raw.read(size)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self.raw.seek(offset, whence)

    def tell(self) -> int:
        return self.raw.tell()

    def seekable(self) -> bool:
        return True


def _members(stream: _Stream, max_member: int, max_total: int) -> dict[str, bytes]:
    """Every member of the tar ``stream``, checked one by one before its data is read."""
    found: dict[str, bytes] = {}
    where, tally = stream.where, _Tally(stream.where, max_member, max_total)
    with tarfile.TarFile(fileobj=stream, mode="r") as tar:
        while (info := tar.next()) is not None:
            name = stream.member = info.name
            if info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE) or info.issparse():
                kind = _KINDS.get(info.type, f"an entry of tar type {info.type!r}")
                kind = "a sparse file" if info.issparse() else kind
                raise ArchiveError(
                    f"{where}: member {name!r} is {kind}; only regular files allowed"
                )
            if problem := _unsafe(name):
                raise ArchiveError(f"{where}: {problem}")
            if name in found:
                raise ArchiveError(f"{where}: member {name!r}: appears twice")
            tally.add(name, info.size)
            found[name] = tar.extractfile(info).read(info.size)  # type: ignore[union-attr]
    while chunk := stream.read(1 << 20):  # the end-of-archive blocks, then the gzip trailer
        if chunk.strip(b"\0"):
            raise ArchiveError(
                f"{where}: data after the end of the archive, or a corrupt header, {stream.after()}"
            )
    return found


def _entry_ok(entry: Any) -> bool:
    """Whether ``entry`` is a manifest entry ``{"sha256": 64 lowercase hex, "size": int >= 0}``."""
    return (
        isinstance(entry, dict)
        and set(entry) == {"sha256", "size"}
        and isinstance(entry["sha256"], str)
        and _SHA256.fullmatch(entry["sha256"]) is not None
        and type(entry["size"]) is int
        and entry["size"] >= 0
    )


def _manifest(where: str, raw: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """The manifest's ``meta`` and ``members``, checked against format 1."""
    bad = f"{where}: member {MANIFEST!r}:"
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as err:
        raise ArchiveError(f"{bad} not valid JSON ({' '.join(str(err).split())})") from err
    if not isinstance(doc, dict) or type(doc.get("format")) is not int or doc["format"] != FORMAT:
        fmt = doc.get("format") if isinstance(doc, dict) else None
        raise ArchiveError(f"{bad} format {fmt!r}; only format {FORMAT} is read")
    meta, members = doc.get("meta"), doc.get("members")
    if set(doc) != {"format", "meta", "members"} or not (
        isinstance(meta, dict) and isinstance(members, dict)
    ):
        raise ArchiveError(f"{bad} not an object of 'format', 'meta' and 'members' (objects)")
    for name, entry in members.items():
        if not _entry_ok(entry):
            raise ArchiveError(f"{bad} entry {name!r} is not {{sha256: 64 hex digits, size: int}}")
    return meta, members


def read_archive(
    path: str | Path, max_member: int = MAX_MEMBER_BYTES, max_total: int = MAX_TOTAL_BYTES
) -> Archive:
    """Read and verify a submission without extracting anything.

    ``max_member`` bounds each member but the manifest (16 MiB), ``max_total`` all together.

    Raises:
        ArchiveError: not a readable gzip tar, truncated or corrupt; a member that is not a
            regular file, has an unsafe or repeated name, or is over the limits; no or a bad
            manifest; a member unlisted, missing, or whose size or SHA-256 differ from it.
    """
    path, where = Path(path), str(path)
    if not path.is_file():
        raise ArchiveError(f"{where}: not a file")
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as raw:
            while chunk := raw.read(1 << 20):
                digest.update(chunk)
            raw.seek(0)
            if raw.read(2) != b"\x1f\x8b":
                raise ArchiveError(f"{where}: not a gzip file (a submission is a .tar.gz)")
            raw.seek(0)
            limit = max_total + (MAX_MEMBERS + 1) * _OVERHEAD + tarfile.RECORDSIZE
            with gzip.GzipFile(fileobj=raw, mode="rb") as gz:
                stream = _Stream(gz, where, max(max_member, MAX_MANIFEST_BYTES), limit)
                try:
                    found = _members(stream, max_member, max_total)
                except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
                    why = " ".join(str(err).split()) or type(err).__name__
                    raise ArchiveError(
                        f"{where}: truncated or corrupt {stream.after()} ({why})"
                    ) from err
    except OSError as err:
        raise ArchiveError(f"{where}: cannot be read ({err.strerror or err})") from err
    if MANIFEST not in found:
        raise ArchiveError(f"{where}: member {MANIFEST!r} missing (it lists every member)")
    meta, listed = _manifest(where, found.pop(MANIFEST))
    for name in found:
        if name not in listed:
            raise ArchiveError(f"{where}: member {name!r}: unlisted member (not in {MANIFEST})")
    for name, entry in listed.items():
        if name not in found:
            raise ArchiveError(f"{where}: member {name!r}: missing member (listed in {MANIFEST})")
        size, sha = len(found[name]), hashlib.sha256(found[name]).hexdigest()
        if (size, sha) != (entry["size"], entry["sha256"]):
            raise ArchiveError(
                f"{where}: member {name!r}: hash mismatch ({size} bytes, sha256 {sha}; "
                f"{MANIFEST} says {entry['size']} bytes, sha256 {entry['sha256']})"
            )
    return Archive(path, digest.hexdigest(), meta, found)
