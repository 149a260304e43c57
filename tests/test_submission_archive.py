"""The submission archive: a deterministic round trip, and every hostile archive refused.

Each hostile archive is built with ``tarfile`` directly and is one a careless ``extractall`` would
act on (write outside its folder, plant links, devices, fifos); apart from the broken part it is
valid (the manifest lists the hostile member with its true hash), so each test fails if the check
it is about were deleted: the refusal must name the member and say what is wrong, in one line,
and nothing may appear on disk.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import tarfile
import uuid
from pathlib import Path

import pytest

from pebench.submission import archive
from pebench.submission.archive import (
    MANIFEST,
    Archive,
    ArchiveError,
    check_name,
    read_archive,
    write_archive,
)

MEMBERS = {
    "runs/abc.csv": b"task,acc\ncifar,0.91\n",
    "source/pkg/__init__.py": b"",
    "source/pkg/m\u00e9thode.py": b"x = 1\n",
    "deep/" + "n" * 200 + ".bin": bytes(range(256)) * 4,  # over 100 characters: a pax header
}
META = {"method": "lora", "seeds": [0, 1], "nested": {"b": 2, "a": None}}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _manifest(listed: dict[str, bytes], fmt: int = 1) -> bytes:
    members = {name: {"sha256": _sha(data), "size": len(data)} for name, data in listed.items()}
    return json.dumps({"format": fmt, "meta": {}, "members": members}).encode()


def _entry(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, **fields: object):
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, len(data)
    for field, value in fields.items():
        setattr(info, field, value)
    return info, data


def _tar(entries: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data else None)
    return buf.getvalue()


def _hostile(root: Path, entries: list, listed: dict[str, bytes] | None = None) -> Path:
    """``root/hostile.tar.gz``: a manifest listing ``listed`` (default: the regular entries)."""
    if listed is None:
        listed = {info.name: data for info, data in entries if info.isreg()}
    path = root / "hostile.tar.gz"
    path.write_bytes(gzip.compress(_tar([_entry(MANIFEST, _manifest(listed)), *entries])))
    return path


def _listing(root: Path) -> list[str]:
    """Every entry under ``root`` (links not followed)."""
    found = []
    for folder, dirs, files in os.walk(root):
        found += [os.path.relpath(os.path.join(folder, n), root) for n in dirs + files]
    return sorted(found)


@pytest.fixture
def box(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``tmp_path`` as the place a careless reader would extract into (the working folder)."""
    (tmp_path / "work").mkdir()
    (tmp_path / "secret.txt").write_text("the target of planted links")
    monkeypatch.chdir(tmp_path / "work")
    return tmp_path


def _refused(path: Path, *needles: str, **limits: int) -> str:
    """The one-line refusal of ``path``, holding ``needles``, with nothing written to disk."""
    before = _listing(path.parent)
    with pytest.raises(ArchiveError) as caught:
        read_archive(path, **limits)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    for needle in needles:
        assert needle in message
    assert _listing(path.parent) == before
    return message


def test_round_trip(tmp_path: Path) -> None:
    sha = write_archive(tmp_path / "sub.tar.gz", MEMBERS, META)
    got = read_archive(tmp_path / "sub.tar.gz")
    assert got == Archive(tmp_path / "sub.tar.gz", sha, META, MEMBERS)
    assert sha == _sha((tmp_path / "sub.tar.gz").read_bytes())
    assert _listing(tmp_path) == ["sub.tar.gz"]  # no temp file left


def test_writing_is_deterministic(tmp_path: Path) -> None:
    first = write_archive(tmp_path / "a.tar.gz", MEMBERS, META)
    reordered = dict(reversed(MEMBERS.items()))
    second = write_archive(tmp_path / "b" / "b.tar.gz", reordered, dict(reversed(META.items())))
    assert first == second
    assert (tmp_path / "a.tar.gz").read_bytes() == (tmp_path / "b" / "b.tar.gz").read_bytes()


def test_layout(tmp_path: Path) -> None:
    path = tmp_path / "sub.tar.gz"
    (tmp_path / "sub.tar.gz").write_bytes(b"an older file, replaced")
    write_archive(path, MEMBERS, META)
    raw = path.read_bytes()
    assert raw[4:8] == b"\0\0\0\0" and not raw[3] & 0x08  # gzip: mtime 0, no file name
    with tarfile.open(path, "r:gz") as tar:
        infos = tar.getmembers()
        manifest = json.loads(tar.extractfile(MANIFEST).read())  # type: ignore[union-attr]
    assert [i.name for i in infos] == [MANIFEST, *sorted(MEMBERS)]
    assert {(i.type, i.mtime, i.uid, i.gid, i.uname, i.gname, i.mode) for i in infos} == {
        (tarfile.REGTYPE, 0, 0, 0, "", "", 0o644)
    }
    assert manifest == {
        "format": 1,
        "meta": META,
        "members": {n: {"sha256": _sha(d), "size": len(d)} for n, d in MEMBERS.items()},
    }
    assert list(manifest) == sorted(manifest) and list(manifest["members"]) == sorted(MEMBERS)
    assert _listing(tmp_path) == ["sub.tar.gz"]


@pytest.mark.parametrize("name", ["../evil.txt", "/abs.txt", "a//b", MANIFEST])
def test_writer_refuses_names_the_reader_would(tmp_path: Path, name: str) -> None:
    with pytest.raises(ArchiveError, match="member") as caught:
        write_archive(tmp_path / "sub.tar.gz", {name: b"x"}, {})
    assert repr(name) in str(caught.value) and "\n" not in str(caught.value)
    assert _listing(tmp_path) == []


def test_writer_refuses_a_member_the_reader_would(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(archive, "MAX_MEMBER_BYTES", 10)
    with pytest.raises(ArchiveError, match="'big.bin': 11 bytes; at most 10"):
        write_archive(tmp_path / "sub.tar.gz", {"big.bin": b"x" * 11}, {})
    assert _listing(tmp_path) == []


@pytest.mark.parametrize("name", ["runs/abc.csv", "source/pkg/__init__.py", "a" * 255])
def test_check_name_accepts(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "/a", "a/../b", "./a", "a//b", "a/", "a\\b", "C:x", "a\nb", "a\0b", "a" * 256]
)
def test_check_name_refuses(name: str) -> None:
    with pytest.raises(ArchiveError) as caught:
        check_name(name)
    message = str(caught.value)
    assert message.startswith(f"member {name!r}: unsafe name") and "allowed: " in message
    assert "\n" not in message


def test_path_traversal(box: Path) -> None:
    path = _hostile(box, [_entry("../evil.txt", b"pwned")])
    _refused(path, "'../evil.txt'", "unsafe name")
    assert not (box / "evil.txt").exists() and not (box.parent / "evil.txt").exists()


def test_absolute_name(box: Path) -> None:
    target = f"/tmp/pebench-evil-{uuid.uuid4().hex}.txt"
    path = _hostile(box, [_entry(target, b"pwned")])
    _refused(path, repr(target), "absolute")
    assert not os.path.lexists(target)


@pytest.mark.parametrize(
    ("kind", "fields", "what"),
    [
        (tarfile.SYMTYPE, {"linkname": "../secret.txt"}, "a symbolic link"),
        (tarfile.LNKTYPE, {"linkname": "../secret.txt"}, "a hard link"),
        (tarfile.CHRTYPE, {"devmajor": 1, "devminor": 3}, "a character device"),
        (tarfile.BLKTYPE, {"devmajor": 7, "devminor": 0}, "a block device"),
        (tarfile.FIFOTYPE, {}, "a fifo"),
        (tarfile.DIRTYPE, {}, "a directory"),
        (tarfile.GNUTYPE_SPARSE, {}, "a sparse file"),
        (tarfile.CONTTYPE, {}, "an entry of tar type b'7'"),
    ],
)
def test_not_a_regular_file(box: Path, kind: bytes, fields: dict, what: str) -> None:
    path = _hostile(box, [_entry("planted", b"", kind, **fields)], listed={"planted": b""})
    _refused(path, f"member 'planted' is {what}; only regular files")
    assert (box / "secret.txt").read_text() == "the target of planted links"


def test_oversized_member_refused_before_reading(
    box: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    read: list[str] = []
    extractfile = tarfile.TarFile.extractfile

    def spy(self: tarfile.TarFile, member: tarfile.TarInfo) -> object:
        read.append(member.name)
        return extractfile(self, member)

    monkeypatch.setattr(tarfile.TarFile, "extractfile", spy)
    path = _hostile(box, [_entry("big.bin", b"x" * 2000)])
    _refused(path, "'big.bin': 2000 bytes; at most 1000 allowed", max_member=1000)
    assert read == [MANIFEST]


def test_total_over_max_total(box: Path) -> None:
    path = _hostile(box, [_entry("a.bin", b"a" * 800), _entry("b.bin", b"b" * 800)])
    _refused(path, "'b.bin': brings the members to", "at most 1500", max_total=1500)


def test_too_many_members(box: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive, "MAX_MEMBERS", 3)
    path = _hostile(box, [_entry(f"{i}.txt", b"x") for i in range(3)])
    _refused(path, "'2.txt': more than 3 members")


def test_unlisted_member(box: Path) -> None:
    entries = [_entry("a.txt", b"a"), _entry("extra.txt", b"sneaked in")]
    path = _hostile(box, entries, listed={"a.txt": b"a"})
    _refused(path, "'extra.txt': unlisted member")


def test_missing_member(box: Path) -> None:
    path = _hostile(box, [_entry("a.txt", b"a")], listed={"a.txt": b"a", "gone.txt": b"g"})
    _refused(path, "'gone.txt': missing member")


@pytest.mark.parametrize("edited", [b"hellO", b"hello!"])
def test_edited_member(box: Path, edited: bytes) -> None:
    path = _hostile(box, [_entry("a.txt", edited)], listed={"a.txt": b"hello"})
    _refused(path, "'a.txt': hash mismatch", _sha(b"hello"), _sha(edited))


def test_duplicate_names(box: Path) -> None:
    path = _hostile(box, [_entry("a.txt", b"same"), _entry("a.txt", b"same")])
    _refused(path, "'a.txt': appears twice")


def _valid(root: Path) -> bytes:
    noise = random.Random(0).randbytes(1 << 16)  # incompressible: the half cut is mid-stream
    write_archive(root / "valid.tar.gz", {"a.bin": noise, "b.txt": b"b"}, {})
    data = (root / "valid.tar.gz").read_bytes()
    (root / "valid.tar.gz").unlink()
    return data


def test_truncated(box: Path) -> None:
    data = _valid(box)
    (box / "cut.tar.gz").write_bytes(data[: len(data) // 2])
    _refused(box / "cut.tar.gz", "truncated or corrupt after member")


def test_corrupt_byte(box: Path) -> None:
    data = bytearray(_valid(box))
    data[len(data) // 2] ^= 0xFF
    (box / "bad.tar.gz").write_bytes(bytes(data))
    _refused(box / "bad.tar.gz", "corrupt")


def test_not_gzip(box: Path) -> None:
    (box / "plain.tar.gz").write_bytes(gzip.decompress(_valid(box)))  # a valid, bare tar
    _refused(box / "plain.tar.gz", "not a gzip file")


def test_gzip_of_no_tar(box: Path) -> None:
    (box / "junk.tar.gz").write_bytes(gzip.compress(b"not a tar at all\n" * 100))
    _refused(box / "junk.tar.gz", "truncated or corrupt before the first member")


def test_not_a_file(box: Path) -> None:
    _refused(box / "work", "not a file")


def test_data_after_the_end(box: Path) -> None:
    """A second tar after the end-of-archive blocks: ``tar --ignore-zeros`` would extract it."""
    listed = {"a.txt": b"a"}
    first = _tar([_entry(MANIFEST, _manifest(listed)), _entry("a.txt", b"a")])
    (box / "two.tar.gz").write_bytes(gzip.compress(first + _tar([_entry("hidden.txt", b"h")])))
    _refused(box / "two.tar.gz", "data after the end of the archive", "after member 'a.txt'")


def test_header_too_large_to_read(box: Path) -> None:
    """A pax header claiming 32 MiB (of zeros: a tiny file) is refused before it is read."""
    entries = [_entry("././@PaxHeader", bytes(32 << 20), tarfile.XHDTYPE), _entry("a.txt", b"a")]
    path = _hostile(box, entries, listed={"a.txt": b"a"})
    _refused(path, f"of {32 << 20} bytes", "at most 16777216 allowed at once", max_member=1000)


def test_stream_longer_than_the_members_allow(box: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(archive, "MAX_MEMBERS", 1)
    entries = [_entry("././@PaxHeader", bytes(1 << 16), tarfile.XHDTYPE), _entry("a.txt", b"a")]
    path = _hostile(box, entries, listed={"a.txt": b"a"})
    limit = 1000 + 2 * 4 * 512 + tarfile.RECORDSIZE
    _refused(path, f"of {1 << 16} bytes", f"{limit} in all", max_total=1000)


@pytest.mark.parametrize(
    ("manifest", "needle"),
    [
        (None, "'MANIFEST.json' missing"),
        (b"{not json", "'MANIFEST.json': not valid JSON"),
        (_manifest({"a.txt": b"a"}, fmt=2), "'MANIFEST.json': format 2; only format 1"),
        (b'{"format": 1, "meta": {}}', "'MANIFEST.json': not an object of"),
        (
            b'{"format": 1, "meta": {}, "members": {"a.txt": {"sha256": "ab", "size": 1}}}',
            "'MANIFEST.json': entry 'a.txt' is not",
        ),
    ],
)
def test_bad_manifest(box: Path, manifest: bytes | None, needle: str) -> None:
    entries = [_entry("a.txt", b"a")] + ([_entry(MANIFEST, manifest)] if manifest else [])
    (box / "m.tar.gz").write_bytes(gzip.compress(_tar(entries)))
    _refused(box / "m.tar.gz", needle)
