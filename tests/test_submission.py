"""Submit a method and verify it (#24): run -> submit -> verify -> leaderboard, and tampering.

The third-party plugin is the template of docs/plugins.md (``tests/method_plugin``), installed
for the submitting processes only (``PYTHONPATH``): the verifier never has the submitted build, so
its re-runs need ``--install`` (a fresh virtual environment holding exactly the submitted files).
The verifier's environment may hold another build of the plugin (a user who ran
``pip install tests/method_plugin``): a different ``method_source``, refused the same way.
Offline, on the demo, under ``demo-smoke``.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from pebench import record as REC
from pebench import results as R
from pebench.cli import main
from pebench.submission.archive import read_archive, write_archive
from pebench.submission.install import InstallError, layout

PLUGIN = Path(__file__).resolve().parent / "method_plugin"
SWEEP = ["--method", "ia3", "--tasks", "demo/shapes", "--budget", "demo-smoke", "--seeds", "0,1"]


def _pebench(cwd: Path, *argv: str, plugin: bool = False) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env.pop("PYTHONPATH", None)
    if plugin:
        env["PYTHONPATH"] = str(PLUGIN)
    cmd = [sys.executable, "-m", "pebench.cli", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=900)


def _verifier_source(method: str) -> str:
    """``method_source`` of ``method`` where the verifier runs ("" when it is not installed)."""
    code = (
        "from pebench.errors import PebenchError\n"
        "from pebench.method_source import method_source\n"
        "try:\n"
        f"    print(method_source({method!r}))\n"
        "except PebenchError:\n"
        "    print()\n"
    )
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.fixture(scope="module")
def genuine(tmp_path_factory) -> Path:
    """A genuine submission of the plugin's complete smoke sweep (4 runs)."""
    root = tmp_path_factory.mktemp("submit")
    run = _pebench(root, "run", *SWEEP, "--results", "r", "--quiet", plugin=True)
    assert run.returncode == 0, run.stderr
    out = _pebench(root, "submit", *SWEEP, "--results", "r", "--out", "ia3.tar.gz", plugin=True)
    assert out.returncode == 0, out.stderr
    return root / "ia3.tar.gz"


@pytest.mark.slow
def test_run_submit_verify_with_install_and_the_leaderboard_marks_it(genuine, tmp_path):
    arc = read_archive(genuine)
    rows = [n for n in arc.members if n.startswith("runs/") and n.endswith(".csv")]
    assert len(rows) == 4 and len([n for n in arc.members if n.endswith(".record.json")]) == 4
    assert {"card.md", "budget.json", "data.json", "environment.json", "conformance.json"} <= set(
        arc.members
    )
    assert set(arc.meta["source"].values()) == {
        "meta:METADATA",
        "meta:entry_points.txt",
        "pebench_ia3/__init__.py",
    }
    assert arc.meta["method_origin"] == "pebench-ia3==0.1" and len(arc.meta["method_source"]) == 16
    # without the submitted build, and without --install, nothing of it runs: unverified, exit 1
    here = _verifier_source("ia3")  # "": not installed; else another build (the suite with the
    assert here != arc.meta["method_source"]  # template plugin pip-installed, #27)
    plain = _pebench(tmp_path, "verify", str(genuine), "--out", "subs")
    assert plain.returncode == 1, plain.stderr
    what = f"installed here as code {here}" if here else "not installed here"
    assert f"verdict: unverified: method 'ia3' is {what}, the submission's is code" in plain.stdout
    assert not (tmp_path / "subs" / "ia3" / "rerun").exists()
    # --install: a fresh environment with the submitted files; the sample reproduces bit for bit
    out = _pebench(tmp_path, "verify", str(genuine), "--out", "subs", "--install", "--sample", "3")
    assert out.returncode == 0, out.stdout + out.stderr
    record = json.loads((tmp_path / "subs" / "ia3" / "verification.json").read_text())
    assert record["verdict"] == "verified" and record["reason"] == ""
    assert len(record["reruns"]) == 3 and all(r["identical"] for r in record["reruns"])
    assert {r["phase"] for r in record["reruns"]} == {"search", "final"}
    assert out.stdout.count("identical predictions") == 3
    venv_site = list((tmp_path / "subs" / "ia3" / "venv").rglob("pebench_ia3/__init__.py"))
    assert len(venv_site) == 1  # the plugin ran from the fresh environment
    assert sorted(record["rows"]) == sorted(
        p.name for p in (tmp_path / "subs" / "ia3" / "results" / "runs").iterdir()
    )
    # the maintainer's leaderboard: the verified submission is its own row, marked
    (tmp_path / "mine" / "runs").mkdir(parents=True)
    board = _pebench(tmp_path, "leaderboard", "--results", "mine", "--submissions", "subs")
    assert board.returncode == 0, board.stderr
    md = (tmp_path / "mine" / "leaderboard.md").read_text(encoding="utf-8")
    assert "| ia3 † ‡ ✓ |" in md, md
    assert "✓ verified submission: ia3 (archive ia3.tar.gz sha256 " in md
    assert "3 of 3 sampled runs re-run bit-identical" in md
    # a failed verification is listed with its reason, never in a table
    record |= {"verdict": "failed", "reason": "run x does not reproduce"}
    (tmp_path / "subs" / "ia3" / "verification.json").write_text(json.dumps(record))
    board = _pebench(tmp_path, "leaderboard", "--results", "mine", "--submissions", "subs")
    md = (tmp_path / "mine" / "leaderboard.md").read_text(encoding="utf-8")
    assert "- ia3: failed: run x does not reproduce" in md and "| ia3 " not in md


# ----------------------------------------------------------------------- tampered archives --
def _rewrite(path: Path, members: dict[str, bytes], meta: dict) -> None:
    """What an attacker does: edit members and write a fresh, self-consistent manifest."""
    write_archive(path, members, meta)


def _rows(members: dict[str, bytes]) -> dict[str, dict]:
    return {
        n: R.parse_csv(c.decode(), n)[0]
        for n, c in members.items()
        if n.startswith("runs/") and n.endswith(".csv")
    }


def _final(members: dict[str, bytes]) -> tuple[str, dict]:
    return next((n, r) for n, r in sorted(_rows(members).items()) if r["phase"] == "final")


def _rekey(members: dict[str, bytes], name: str, row: dict) -> None:
    """Replace the row of file ``name`` by ``row`` under its recomputed id, record and all."""
    old = R.parse_csv(members.pop(name).decode(), name)[0]["run_id"]
    rec = REC.parse(members.pop(f"runs/{old}.record.json"), "rec")
    row["run_id"] = R.run_id(row)
    data = REC.RunRecord(row["run_id"], rec.split, rec.pred, rec.correct, rec.epochs).to_bytes()
    row["record_sha256"] = REC.sha256(data)
    members[f"runs/{row['run_id']}.record.json"] = data
    members[f"runs/{row['run_id']}.csv"] = R.rows_to_csv([row]).encode()


def edited_row_value(m: dict, meta: dict) -> str:
    name, row = _final(m)
    # a better score, with counts to match: the row alone is consistent, its record is not
    old, n = row["n_test_correct"], row["n_test"]
    new = old + 7 if old + 7 <= n else old - 7
    row.update(test_top1=new / n, n_test_correct=new)
    m[name] = R.rows_to_csv([row]).encode()
    return f"n_test_correct is {old} here and {new} in its row"


def row_of_another_version(m: dict, meta: dict) -> str:
    name, row = _final(m)
    _rekey(m, name, dict(row, method_source="0" * 16, method_origin="pebench-ia3==0.0"))
    return "method_source is '0000000000000000', the submission's is"


def edited_source(m: dict, meta: dict) -> str:
    init = next(k for k in m if k.endswith("pebench_ia3/__init__.py"))
    m[init] = m[init].replace(b"return x * self.factor()", b"return x * 2 * self.factor()")
    return "the submitted source hashes to"


def missing_predictions(m: dict, meta: dict) -> str:
    _, row = _final(m)
    del m[f"runs/{row['run_id']}.record.json"]
    return f"its prediction file runs/{row['run_id']}.record.json is missing"


def swapped_budget(m: dict, meta: dict) -> str:
    from pebench.budget import get_budget

    m["budget.json"] = json.dumps(get_budget("demo-v3").as_dict()).encode()
    return "does not have the values of the submitted budget 'demo-smoke' (a swapped budget)"


def data_manifest_mismatch(m: dict, meta: dict) -> str:
    data = json.loads(m["data.json"])
    data["demo/shapes"][1] = "f" * 16
    m["data.json"] = json.dumps(data).encode()
    for name, row in _rows(m).items():
        _rekey(m, name, dict(row, data_manifest="f" * 16))
    return "the data prepared here is"


TAMPERED = [
    edited_row_value,
    row_of_another_version,
    edited_source,
    missing_predictions,
    swapped_budget,
    data_manifest_mismatch,
]


def _tar(path: Path, entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> None:
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)


def _entry(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, **kw) -> tuple:
    info = tarfile.TarInfo(name)
    info.type, info.size = kind, len(data) if kind == tarfile.REGTYPE else 0
    for k, v in kw.items():
        setattr(info, k, v)
    return info, data if kind == tarfile.REGTYPE else None


def _genuine_entries(genuine: Path) -> list[tuple]:
    arc = read_archive(genuine)
    with tarfile.open(genuine, "r:gz") as tar:
        manifest = tar.extractfile("MANIFEST.json").read()
    return [_entry("MANIFEST.json", manifest)] + [_entry(n, c) for n, c in arc.members.items()]


def path_traversal(genuine: Path, out: Path) -> str:
    _tar(out, [*_genuine_entries(genuine), _entry("../../escaped.txt", b"x")])
    return "'../../escaped.txt': unsafe name"


def absolute_path(genuine: Path, out: Path) -> str:
    _tar(out, [*_genuine_entries(genuine), _entry("/tmp/pebench-absolute-evil.txt", b"x")])
    return "unsafe name (an absolute path)"


def symlink(genuine: Path, out: Path) -> str:
    link = _entry("runs/link.csv", kind=tarfile.SYMTYPE, linkname="/etc/passwd")
    _tar(out, [*_genuine_entries(genuine), link])
    return "member 'runs/link.csv' is a symbolic link"


def oversized_member(genuine: Path, out: Path) -> str:
    big = b"\0" * (64 * 1024 * 1024 + 1)
    _tar(out, [*_genuine_entries(genuine), _entry("card2.md", big)])
    return "member 'card2.md': 67108865 bytes; at most 67108864 allowed per member"


def unlisted_member(genuine: Path, out: Path) -> str:
    _tar(out, [*_genuine_entries(genuine), _entry("runs/extra.csv", b"run_id\n")])
    return "member 'runs/extra.csv': unlisted member"


def truncated(genuine: Path, out: Path) -> str:
    data = genuine.read_bytes()
    out.write_bytes(data[: len(data) // 2])
    return "truncated or corrupt"


HOSTILE = [path_traversal, absolute_path, symlink, oversized_member, unlisted_member, truncated]


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def _refused(tmp_path: Path, archive: Path, capsys) -> str:
    before = _files(tmp_path)
    rc = main(["verify", str(archive), "--out", str(tmp_path / "subs"), "--install"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("pebench: error: "), err
    new = _files(tmp_path) - before
    work = f"subs/{archive.name.removesuffix('.tar.gz')}"
    assert all(p == "subs" or p.startswith(work) for p in new), new  # the work folder only
    assert not any(p.startswith(f"{work}/venv") or p.startswith(f"{work}/results") for p in new)
    return err


@pytest.mark.slow
@pytest.mark.parametrize("tamper", TAMPERED, ids=lambda f: f.__name__)
def test_a_tampered_submission_is_refused_in_one_line(genuine, tmp_path, capsys, tamper):
    arc = read_archive(genuine)
    members, meta = dict(arc.members), dict(arc.meta)
    expected = tamper(members, meta)
    bad = tmp_path / f"{tamper.__name__}.tar.gz"
    _rewrite(bad, members, meta)
    err = _refused(tmp_path, bad, capsys)
    assert expected in err, err
    work = tmp_path / "subs" / tamper.__name__
    record = json.loads((work / "verification.json").read_text())
    assert record["verdict"] == "failed" and expected in record["reason"]


@pytest.mark.slow
@pytest.mark.parametrize("hostile", HOSTILE, ids=lambda f: f.__name__)
def test_a_hostile_archive_is_refused_without_writing_anything(genuine, tmp_path, capsys, hostile):
    bad = tmp_path / f"{hostile.__name__}.tar.gz"
    expected = hostile(genuine, bad)
    err = _refused(tmp_path, bad, capsys)
    assert expected in err, err
    assert not (tmp_path / "subs").exists()  # refused before the work folder was made
    assert not Path("/tmp/pebench-absolute-evil.txt").exists()
    assert not (tmp_path.parent / "escaped.txt").exists()


# ---------------------------------------------------------------------------- submit side --
@pytest.mark.slow
def test_an_incomplete_sweep_is_not_submitted(genuine, tmp_path):
    out = _pebench(
        genuine.parent, "submit", *SWEEP[:-1], "0,1,2", "--results", "r", "--out", "x.tar.gz",
        plugin=True,
    )  # fmt: skip
    assert out.returncode == 2 and not (genuine.parent / "x.tar.gz").exists()
    line = out.stderr.strip()
    assert line == (
        "pebench: error: cannot submit ia3: demo/shapes: the final of seed 2 is missing; a "
        "submission is a complete sweep: finish it with the same `pebench run` options"
    ), line


def test_install_layout_refuses_files_that_shadow_pebench():
    files = {"meta:METADATA": b"Name: evil\nVersion: 1\n", "pebench/__init__.py": b"x = 1\n"}
    with pytest.raises(InstallError, match="would shadow 'pebench'"):
        layout(files)
    ok = layout({"meta:METADATA": b"Name: good-plugin\nVersion: 2\n", "good/__init__.py": b""})
    assert sorted(ok) == ["good/__init__.py", "good_plugin-2.dist-info/METADATA"]


# ------------------------------------------------------------------- the re-run tolerance --
def _final_row(task: str, seed: int, score: float, n: int = 400) -> dict:
    k = round(score * n)
    return {"phase": "final", "status": "ok", "task": task, "seed": seed, "test_top1": k / n,
            "n_test": n, "n_test_correct": k}  # fmt: skip


def test_the_tolerance_is_the_t_quantile_of_two_runs_seed_and_test_noise():
    from scipy import stats

    from pebench.submission.checks import seed_spread, tolerance

    rows = {f"{t}{s}": _final_row(t, s, x) for t, xs in (("a", (0.5, 0.6)), ("b", (0.7, 0.8, 0.9)))
            for s, x in enumerate(xs)}  # fmt: skip
    s2, df = seed_spread(rows)
    assert df == 3 and s2 == pytest.approx((0.005 + 0.02) / 3)
    row = rows["a0"]
    expected = stats.t.ppf(0.995, 3) * (2 * (s2 + 0.5 * 0.5 / 400)) ** 0.5
    assert tolerance(row, rows) == pytest.approx(expected)


@pytest.mark.parametrize(("tasks", "seeds"), [(1, 2), (4, 3)])
def test_a_genuine_rerun_outside_a_matching_environment_passes_99_percent_of_the_time(tasks, seeds):
    """Simulated: a re-run is another draw of the seed noise (the worst case of round-off)."""
    import numpy as np

    from pebench.submission.checks import tolerance

    rng = np.random.default_rng(0)
    sims, passed, sigma, n = 4000, 0, 0.04, 400
    for _ in range(sims):
        means = rng.uniform(0.3, 0.9, tasks)
        draw = lambda t, m=means: float(np.clip(m[t] + sigma * rng.standard_normal(), 0, 1))  # noqa: E731
        rows = {f"{t}-{s}": _final_row(str(t), s, draw(t), n)
                for t in range(tasks) for s in range(seeds)}  # fmt: skip
        sub = rows["0-0"]
        rerun = draw(0)
        passed += abs(round(rerun * n) / n - sub["test_top1"]) <= tolerance(sub, rows)
    assert passed / sims >= 0.985, passed / sims  # 99 % nominal; 4000 draws: se 0.16 pp
