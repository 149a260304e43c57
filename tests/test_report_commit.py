"""The leaderboard's outputs are one unit: a kill or a full disk leaves the old set or the new one.

The kill test runs a script in a subprocess that forks once per kill point; each child writes
the leaderboard with ``os.write`` / ``os.fsync`` / ``os.replace`` / ``os.unlink`` wrapped so
that the k-th call (a ``write`` after half its bytes) SIGKILLs the child. After each kill the
parent classifies the output files as the old set, the new set or a mix, then recovers as the
next write does (``recover_outputs``), and classifies again.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from report_rows import LB, REG, VT, write

from pebench.report import commit
from pebench.report import leaderboard as lb

TESTS = Path(__file__).resolve().parent

#: sets up the old set and the new rows; defines snapshot() and generate(); then $BODY
PRELUDE = """
import json, os, shutil, signal, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from pebench.datasets import register_suite
import report_rows as t
register_suite(t.LB, t.LB_TASKS)
register_suite(t.VT, t.VT_TASKS)
from pebench.report import leaderboard as lb

top = Path({top!r})
home, board = top / "results", top / "leaderboard.md"
real = lb.plot_bytes
memo = {{}}


def cached(df, suites, tasks, suite_tables=None):  # render each row set once: the kills
    key = len(df)  # are about writing
    if key not in memo:
        memo[key] = real(df, suites, tasks, suite_tables)
    return memo[key]


lb.plot_bytes = cached


def snapshot():
    return {{
        str(p.relative_to(top)): p.read_bytes()
        for p in sorted(top.rglob("*"))
        if p.is_file() and "runs" not in p.relative_to(top).parts
    }}


def restore(files):
    for p in sorted(top.rglob("*"), reverse=True):
        if "runs" in p.relative_to(top).parts or p.name == "runs" or p == home:
            continue
        p.unlink() if p.is_file() else p.rmdir()
    for name, data in files.items():
        (top / name).parent.mkdir(parents=True, exist_ok=True)
        (top / name).write_bytes(data)


def classify(files, old, new):
    # the output set among files (temp files and the journal aside): old, new or mixed
    litter = [n for n in files if n.endswith(".tmp") or "pebench-write" in n]
    files = {{n: d for n, d in files.items() if n not in litter}}
    return "old" if files == old else "new" if files == new else "mixed"


lb.generate(home, board)
old = snapshot()
shutil.rmtree(home / "runs")
shutil.copytree(top / "new-runs", home / "runs")
scratch = top.parent / "scratch"
shutil.copytree(top, scratch)
lb.generate(scratch / "results", scratch / "leaderboard.md")
new = {{
    str(p.relative_to(scratch)): p.read_bytes()
    for p in sorted(scratch.rglob("*"))
    if p.is_file() and "runs" not in p.relative_to(scratch).parts
}}
shutil.rmtree(scratch)
"""

KILLS = """
def arm(k):
    count = [0]
    real_write, real_fsync, real_replace, real_unlink = os.write, os.fsync, os.replace, os.unlink

    def tick():
        count[0] += 1
        return count[0] == k

    def write(fd, data):
        if tick():
            real_write(fd, bytes(data[: len(data) // 2]))
            os.kill(os.getpid(), signal.SIGKILL)
        return real_write(fd, data)

    def wrap(real_call):
        def call(*args, **kwargs):
            if tick():
                os.kill(os.getpid(), signal.SIGKILL)
            return real_call(*args, **kwargs)

        return call

    os.write, os.fsync = write, wrap(real_fsync)
    os.replace, os.unlink = wrap(real_replace), wrap(real_unlink)


report = []
for k in range(1, 200):
    restore(old)
    pid = os.fork()
    if pid == 0:
        arm(k)
        lb.generate(home, board)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if os.WIFEXITED(status):
        assert os.WEXITSTATUS(status) == 0
        report.append({"k": k, "killed": False, "after": classify(snapshot(), old, new)})
        break
    before = classify(snapshot(), old, new)
    journal = (lb.outputs(home, board).home / ".pebench-write.json").exists()  # the output folder
    assert lb.is_stale(home, board) or not journal  # the check reports, never recovers
    assert classify(snapshot(), old, new) == before
    lb.recover_outputs(home, board)  # what the next write does first
    after = snapshot()
    report.append({
        "k": k,
        "killed": True,
        "before": before,
        "journal": journal,
        "after": classify(after, old, new),
        "litter": [n for n in after if n.endswith(".tmp") or ".pebench-write" in n],
    })
    lb.generate(home, board)  # and the next write completes normally
    assert classify(snapshot(), old, new) == "new"
print(json.dumps(report))
"""

FULL_DISK = """
from pebench.cli import main

report = []
for k in range(1, 60):
    restore(old)
    pid = os.fork()
    if pid == 0:
        count = [0]

        def full(real_call):
            def call(*args):
                count[0] += 1
                if count[0] == k:
                    raise OSError(errno.ENOSPC, "No space left on device")
                return real_call(*args)

            return call

        os.write, os.fsync = full(os.write), full(os.fsync)
        err = os.open(top.parent / f"stderr-{k}", os.O_WRONLY | os.O_CREAT)
        os.dup2(err, 2)
        rc = main(["leaderboard", "--results", str(home), "--output", str(board)])
        os._exit(rc)
    _, status = os.waitpid(pid, 0)
    rc = os.WEXITSTATUS(status)
    stderr = (top.parent / f"stderr-{k}").read_text()
    report.append({"k": k, "rc": rc, "stderr": stderr, "after": classify(snapshot(), old, new),
                   "litter": [n for n in snapshot() if n.endswith(".tmp") or "pebench-" in n]})
    if [r["rc"] for r in report[-4:]] == [0, 0, 0, 0]:  # past the write's last call
        break
print(json.dumps(report))
"""


def _setup(tmp_path: Path) -> Path:
    """``top/results/runs``: the old rows (two suites); ``top/new-runs``: the new rows.

    The new set differs in every file: a method more on ``lbtest`` (new CSV, figures and
    board), and no ``lbvtab`` rows (its figures are deleted with the new set).
    """
    top = tmp_path / "top"
    home = top / "results"
    for task in LB.tasks:
        write(home, task=task, test_top1=0.6)
    for task in VT.tasks:
        write(home, task=task, test_top1=0.4)
    new = top / "new-runs"
    for task in LB.tasks:
        write(new, task=task, test_top1=0.6)
        write(new, task=task, method="bitfit", method_config="{}", test_top1=0.7)
    shutil.move(new / "runs", top / "runs-tmp")
    new.rmdir()
    (top / "runs-tmp").rename(new)
    return top


def _run(tmp_path: Path, body: str) -> list[dict]:
    top = _setup(tmp_path)
    script = PRELUDE.format(tests=str(TESTS), top=str(top)) + textwrap.dedent(body)
    script = "import errno\n" + script
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_kill_at_any_point_of_a_write_leaves_the_old_or_the_new_set(tmp_path):
    report = _run(tmp_path, KILLS)
    kills = [r for r in report if r["killed"]]
    assert not report[-1]["killed"] and report[-1]["after"] == "new"
    for r in kills:
        # after recovery (the next check or write): exactly one of the two sets, no litter
        assert r["after"] in ("old", "new"), r
        assert r["litter"] == [], r
        # on disk right after the kill: a mix only while the committed journal is there
        assert r["before"] in ("old", "new") or r["journal"], r
    assert len(kills) >= 25, report  # every write, fsync, rename and delete of the write
    outcomes = {r["after"] for r in kills}
    assert outcomes == {"old", "new"}, report  # kills before and after the commit point


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_full_disk_at_any_write_is_one_error_line_and_changes_nothing(tmp_path):
    report = _run(tmp_path, FULL_DISK)
    for r in report:  # a full disk at the k-th write or fsync of the leaderboard write
        assert r["litter"] == [], r
        if r["rc"] == 0:  # a folder fsync, or past the last write: the new set
            assert r["after"] == "new" and r["stderr"] == "", r
            continue
        assert r["rc"] == 2, r
        assert r["after"] == "old", r
        lines = r["stderr"].splitlines()
        assert len(lines) == 1 and lines[0].startswith("pebench: error: cannot write "), r
        assert "no space left on device" in lines[0] and "nothing changed" in lines[0], r
    assert sum(r["rc"] == 2 for r in report) >= 16, report  # the journal and every file
    assert report[-1]["rc"] == 0


def test_stale_temp_files_of_killed_writes_are_removed(tmp_path):
    for task in LB.tasks:
        write(tmp_path, task=task)
    board = tmp_path / "leaderboard.md"
    lb.generate(tmp_path, board, **REG)
    # what a killed write of the old code (mkstemp names) or of this one leaves behind
    litter = [
        tmp_path / ".leaderboard.md.k3j4h5.tmp",
        tmp_path / ".results.csv.abc123.tmp",
        tmp_path / "plots" / ".lbtest_acc_vs_params.png.x9y8z7.tmp",
        tmp_path / ".pebench-write.json.0a1b2c.tmp",
    ]
    for path in litter:
        path.write_text("partial")
    keep = tmp_path / "notes.tmp"  # not ours: kept
    keep.write_text("mine")
    lb.generate(tmp_path, board, **REG)
    assert not [p for p in litter if p.exists()] and keep.exists()
    for path in litter:  # the check writes nothing, and litter does not make it stale
        path.write_text("partial")
    assert not lb.is_stale(tmp_path, board, **REG)
    assert all(p.exists() for p in litter)


def test_an_interrupted_commit_is_completed_by_the_next_write(tmp_path):
    """A journal in state ``commit`` with half the renames done: recovery rolls forward."""
    home = tmp_path
    old = {home / "a.txt": b"old a", home / "sub" / "b.txt": b"old b"}
    for path, data in old.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    tmp_b = home / "sub" / ".b.txt.0123456789ab.tmp"
    tmp_b.write_bytes(b"new b")
    (home / "a.txt").write_bytes(b"new a")  # its rename happened before the kill
    journal = {  # paths relative to the output folder
        "format": 1,
        "state": "commit",
        "files": [
            [".a.txt.0123456789ab.tmp", "a.txt"],
            ["sub/.b.txt.0123456789ab.tmp", "sub/b.txt"],
        ],
        "remove": ["gone.png"],
    }
    (home / "gone.png").write_bytes(b"x")
    (home / commit.JOURNAL).write_text(json.dumps(journal))
    commit.recover(home)
    assert (home / "a.txt").read_bytes() == b"new a"
    assert (home / "sub" / "b.txt").read_bytes() == b"new b"
    assert not (home / "gone.png").exists() and not (home / commit.JOURNAL).exists()
    assert not tmp_b.exists()
    # a journal still ``writing``: rolled back, the targets untouched
    tmp_b.write_bytes(b"newer b")
    (home / commit.JOURNAL).write_text(json.dumps({**journal, "state": "writing"}))
    commit.recover(home)
    assert (home / "sub" / "b.txt").read_bytes() == b"new b" and not tmp_b.exists()
    assert not (home / commit.JOURNAL).exists()


def test_write_error_undoes_everything(tmp_path, monkeypatch):
    (tmp_path / "old.txt").write_bytes(b"old")
    calls = []

    def full(path: Path, data: bytes) -> None:
        calls.append(path)
        if len(calls) == 3:  # the journal, one file, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    real = commit._write_file
    monkeypatch.setattr(commit, "_write_file", full)
    files = {tmp_path / "old.txt": b"new", tmp_path / "deep" / "x.txt": b"x"}
    with pytest.raises(commit.WriteError, match="no space left on device.*nothing changed"):
        commit.write_unit(tmp_path, files)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.txt"]  # no temp, no new folder
    assert (tmp_path / "old.txt").read_bytes() == b"old"


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    return proc.returncode == 0


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.geteuid() != 0 or shutil.which("mount") is None,
    reason="needs root to mount a small tmpfs",
)
def test_a_really_full_disk(tmp_path):
    """On a 64 KiB filesystem the figures do not fit: one error line, the old set kept."""
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "64k"):
        pytest.skip("mount not permitted here")
    try:
        for seed in range(2):
            for task in LB.tasks:
                write(disk, task=task, seed=seed)
        (disk / "leaderboard.md").write_text("the previous board\n")
        before = {p: p.read_bytes() for p in disk.rglob("*") if p.is_file()}
        code = textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {str(TESTS)!r})
            from pebench.datasets import register_suite
            import report_rows as t
            register_suite(t.LB, t.LB_TASKS)
            from pebench.cli import main
            sys.exit(main(["leaderboard", "--results", {str(disk)!r}]))
            """
        )
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 2, proc.stderr
        assert len(proc.stderr.splitlines()) == 1, proc.stderr
        assert proc.stderr.startswith("pebench: error: cannot write ")
        assert "no space left on device" in proc.stderr
        assert {p: p.read_bytes() for p in disk.rglob("*") if p.is_file()} == before
    finally:
        subprocess.run(["umount", str(disk)], check=False)


# ------------------------------------------------------------------ the journal is data --
def _board(tmp_path):
    for task in LB.tasks:
        write(tmp_path / "results", task=task)
    board = tmp_path / "results" / "leaderboard.md"
    lb.generate(tmp_path / "results", board, **REG)
    return tmp_path / "results", board


def _plant(home, state, files, remove=()):
    journal = {"format": 1, "state": state, "files": files, "remove": list(remove)}
    (home / commit.JOURNAL).write_text(json.dumps(journal))


def _tree(root):
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    ("state", "files", "remove", "why"),
    [
        ("commit", [], ["{victim}"], "is not a path relative"),  # absolute path
        ("commit", [], ["../victim/important.txt"], "would delete"),  # relative, out of home
        ("commit", [["{evil}", "{pth}"]], [], "is not a path relative"),  # move into site
        ("commit", [["../.x.0123456789ab.tmp", "../victim/important.txt"]], [], "does not write"),
        ("writing", [["../victim/important.txt", "results.csv"]], [], "is not a temp file"),
        ("commit", [["plots/.a.png.0123456789ab.tmp", "plots/../../victim/x.png"]], [], "does not"),
    ],
    ids=["absolute", "relative", "move-in", "outside", "writing-deletes", "dotdot-figure"],
)
def test_a_planted_journal_is_refused_in_one_line_and_nothing_is_touched(
    tmp_path, capsys, state, files, remove, why
):
    """The attack of the hardening issue: a results folder carrying a journal that names other
    files. Neither a write nor a check follows it; the write refuses in one line."""
    home, board = _board(tmp_path)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "important.txt").write_text("keep me")
    (victim / "evil").write_text("import os")
    subs = {"{victim}": str(victim / "important.txt"), "{evil}": str(victim / "evil"),
            "{pth}": str(tmp_path / "site" / "zz_evil.pth")}  # fmt: skip
    fix = lambda v: subs.get(v, v)  # noqa: E731
    _plant(home, state, [[fix(a), fix(b)] for a, b in files], [fix(r) for r in remove])
    before = _tree(tmp_path)
    assert lb.is_stale(home, board, **REG)  # an interrupted write: stale, and nothing touched
    assert _tree(tmp_path) == before
    from pebench.cli import main

    assert main(["leaderboard", "--results", str(home), "--output", str(board)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "refusing the leaderboard write journal" in err and why in err
    assert _tree(tmp_path) == before  # nothing deleted, moved or written
    assert not (tmp_path / "site").exists()
