"""pebench leaderboard --submissions: which verified submissions join the tables, and how.

Built from the committed rows: one method's rows (``lora``, pretrained) are a submission, another
method's (``ssf``) the user's own results folder.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
from pathlib import Path

import pytest

from pebench.cli import main
from pebench.report import leaderboard as lb
from pebench.report.aggregate import aggregate
from pebench.report.markdown import render_markdown
from pebench.report.submissions import (
    MAX_BYTES,
    NO_VERIFICATION,
    VERIFICATION,
    read_submissions,
)
from pebench.results import ResultsError
from pebench.store import RunStore

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
SHA = "0123456789ab" + "c" * 52
FOOT = (
    "✓ verified submission: lora (archive lora-x.tar.gz sha256 0123456789ab…, 2 of 3 sampled "
    "runs re-run bit-identical), verified with pebench 0.1.0, Python 3.11.7, torch 2.5.1, cpu"
)
SECTION = "## Submissions not shown"


@functools.cache
def committed(method: str) -> tuple[str, ...]:
    """The run ids of the committed pretrained-weights rows of ``method`` on the demo suite."""
    store = RunStore(RESULTS)
    rows = store.rows() if store.exists() else []
    return tuple(
        r["run_id"]
        for r in rows
        if r["method"] == method and r["weights"] != "random" and r["suite"] == "demo"
    )


# skipped only without committed rows: a change in what is committed fails loudly, never skips
pytestmark = pytest.mark.skipif(
    not committed("lora") or not committed("ssf"), reason="no committed lora/ssf rows"
)


def copy_rows(method: str, folder: Path) -> Path:
    """``folder/runs/`` holding the committed rows of ``method``, each with its record."""
    source, dest = RunStore(RESULTS), RunStore(folder)
    dest.runs.mkdir(parents=True, exist_ok=True)
    for rid in committed(method):
        for path in (source.row_path(rid), source.record_path(rid)):
            if path.exists():
                (dest.runs / path.name).write_bytes(path.read_bytes())
    return folder


def verify(sub: Path, **over: object) -> dict:
    """Write ``sub/verification.json`` for the rows under ``sub/results/runs`` (real sha256s)."""
    runs = RunStore(sub / "results").runs
    meta = {
        "format": 1,
        "verdict": "verified",
        "reason": "",
        "archive": {"name": "lora-x.tar.gz", "sha256": SHA},
        "method": "lora",
        "method_source": "55eb550dbfe12b19",
        "method_origin": "builtin",
        "budget": "demo-v3",
        "tasks": ["demo/shapes"],
        "results": "results",
        "rows": {
            p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(runs.iterdir())
            if p.is_file()
        },
        "verifier": {
            "pebench": "0.1.0",
            "python": "3.11.7",
            "torch": "2.5.1",
            "timm": "1.0.31",
            "device": "cpu",
            "platform": "Linux-x86_64",
        },
        "reruns": [
            {"run_id": "a", "identical": True, "ok": True},
            {"run_id": "b", "identical": True, "ok": True},
            {"run_id": "c", "identical": False, "ok": True},
        ],
        "verified_at": "2026-12-06T22:00:00Z",
        **over,
    }
    (sub / VERIFICATION).write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return meta


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    """``(mine, subs, sub)``: the ssf results folder, the submissions folder, a verified one."""
    mine = copy_rows("ssf", tmp_path / "mine")
    sub = tmp_path / "subs" / "lora-x"
    copy_rows("lora", sub / "results")
    verify(sub)
    return mine, tmp_path / "subs", sub


def build(tmp_path: Path, mine: Path, subs: Path | None, name: str = "lb.md") -> str:
    lb.generate([mine], leaderboard_path=tmp_path / name, submissions=subs)
    return (tmp_path / name).read_text(encoding="utf-8")


def demo_rows(md: str) -> list[dict[str, str]]:
    """The cells of the demo suite's measured table."""
    lines = md.splitlines()
    start = lines.index("## demo")
    first = next(i for i in range(start, len(lines)) if lines[i].startswith("| "))
    end = next(i for i in range(first, len(lines)) if not lines[i].startswith("|"))
    table = [[c.strip() for c in line.strip("|").split(" | ")] for line in lines[first:end]]
    return [dict(zip(table[0], row, strict=True)) for row in table[2:]]


def table_lines(md: str) -> list[str]:
    return [line for line in md.splitlines() if line.startswith("|")]


def left_out(md: str) -> list[str]:
    """The items of the "Submissions not shown" section."""
    lines = md.splitlines()
    start = lines.index(SECTION)
    items = []
    for line in lines[start + 1 :]:
        if line.startswith("#"):
            break
        if line.startswith("- "):
            items.append(line)
    return items


def edit_field(path: Path, column: str, new: str) -> None:
    """Change one field of a row file in place (the rest byte for byte)."""
    header, values = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    old = f",{values[header.index(column)]},"
    data = path.read_text(encoding="utf-8")
    assert data.count(old) == 1
    path.write_text(data.replace(old, f",{new},"), encoding="utf-8")


def test_a_verified_submission_is_its_own_marked_row(tmp_path, setup):
    mine, subs, sub = setup
    md = build(tmp_path, mine, subs)
    rows = demo_rows(md)
    assert sorted((r["method"], r["results dir"]) for r in rows) == [
        ("lora ✓", str(sub / "results")),
        ("ssf", str(mine)),
    ]
    assert FOOT in md.splitlines()
    assert SECTION not in md
    # the same numbers as a board of the submission's rows alone: never averaged with others
    alone = demo_rows(render_markdown(aggregate(sub / "results")))
    assert [r["mean"] for r in rows if r["method"] == "lora ✓"] == [alone[0]["mean"]]
    assert md.splitlines()[0] == lb.header("mine/runs/*.csv + subs/lora-x/results/runs/*.csv")
    dirs = [
        r["results_dir"]
        for r in csv.DictReader(io.StringIO((tmp_path / "results.csv").read_text()))
    ]
    want = (len(committed("lora")), len(committed("ssf")))  # every row, search runs included
    assert want[0] >= 28 and (dirs.count(str(sub / "results")), dirs.count(str(mine))) == want
    assert not (sub / "results" / "results.csv").exists()


def test_a_failed_submission_is_listed_and_in_no_table(tmp_path, setup):
    mine, subs, sub = setup
    verify(sub, verdict="failed", reason="run 123 differs")
    md = build(tmp_path, mine, subs)
    assert not any("lora" in line for line in table_lines(md))
    assert [r["method"] for r in demo_rows(md)] == ["ssf"]
    assert left_out(md) == ["- lora-x: failed: run 123 differs"]
    assert "lora" not in (tmp_path / "results.csv").read_text()
    # nothing else changes: the board without the section is the board without submissions
    without = build(tmp_path, mine, None, "plain.md")
    assert md == without + (
        f"\n{SECTION}\n\nTheir verification failed, is missing, or no longer matches their "
        "files: their rows are in no table.\n\n- lora-x: failed: run 123 differs\n"
    )


def test_a_row_edited_after_verification_is_not_shown(tmp_path, setup):
    mine, subs, sub = setup
    row = RunStore(sub / "results").row_path(committed("lora")[0])
    value = next(csv.DictReader(io.StringIO(row.read_text())))["wall_time_s"]
    at = value.index(".") + 1  # one byte: the first decimal
    edit_field(row, "wall_time_s", value[:at] + str((int(value[at]) + 1) % 10) + value[at + 1 :])
    assert RunStore(sub / "results").read(row.stem)["wall_time_s"] != float(value)  # still valid
    md = build(tmp_path, mine, subs)
    assert not any("lora" in line for line in table_lines(md))
    assert left_out(md) == [
        f"- lora-x: unverified: rows changed since verification: {row.name} (edited)"
    ]


def test_a_row_added_after_verification_is_not_shown(tmp_path, setup):
    mine, subs, sub = setup
    extra = committed("ssf")[0]
    for path in (RunStore(mine).row_path(extra), RunStore(mine).record_path(extra)):
        (RunStore(sub / "results").runs / path.name).write_bytes(path.read_bytes())
    md = build(tmp_path, mine, subs)
    assert not any("lora" in line for line in table_lines(md))
    assert left_out(md) == [
        f"- lora-x: unverified: rows changed since verification: {extra}.csv (added)"
    ]


def test_a_results_folder_outside_the_submission_is_refused(tmp_path, setup):
    mine, subs, sub = setup
    (sub / "results").rename(subs / "escape")  # the rows the verification lists, one level up
    meta = json.loads((sub / VERIFICATION).read_text())
    (sub / VERIFICATION).write_text(json.dumps({**meta, "results": "../escape"}))
    md = build(tmp_path, mine, subs)
    assert not any("lora" in line for line in table_lines(md))
    assert left_out(md) == [
        f"- escape: unverified: {NO_VERIFICATION}",
        "- lora-x: unverified: verification.json: results '../escape' is not a plain relative "
        "path inside the submission's folder",
    ]


@pytest.mark.parametrize(
    "results",
    ["../escape", "/abs/results", "results/../../escape", "./results", "results/", "C:results"],
)
def test_only_a_plain_relative_results_path_is_read(setup, results):
    _, subs, sub = setup
    verify(sub, results=results)
    (found,) = read_submissions(subs)
    assert (found.shown, found.verdict) == (False, "unverified")
    assert found.reason.startswith(f"verification.json: results {results!r} is not a plain")


def test_a_malformed_verification_is_listed_and_the_others_still_shown(tmp_path, setup):
    mine, subs, sub = setup
    (subs / "bad").mkdir()
    (subs / "bad" / VERIFICATION).write_text('{"format": 1, "verdict": ', encoding="utf-8")
    (subs / "notes.txt").write_text("not a submission")  # a file: ignored
    md = build(tmp_path, mine, subs)
    assert sorted(r["method"] for r in demo_rows(md)) == ["lora ✓", "ssf"]
    (item,) = left_out(md)
    assert item.startswith("- bad: unverified: verification.json is not valid UTF-8 JSON (")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[1, 2]", "verification.json is not a JSON object"),
        ('{"format": 1, "verdict": "verified"}', "verification.json: no 'reason'"),
        (
            '{"format": 2, "verdict": "verified", "reason": ""}',
            "verification.json: format 2 is not 1",
        ),
        (
            '{"format": 1, "verdict": "fine", "reason": ""}',
            "verification.json: verdict 'fine' is not one of verified, failed, unverified",
        ),
        (
            '{"format": 1, "verdict": "failed", "reason": "x", "verdict": "verified"}',
            "verification.json is not valid UTF-8 JSON (key 'verdict' appears twice in one object)",
        ),
        (
            '{"format": 1, "verdict": "verified", "reason": "", "method": "lora"}',
            "verification.json: 'archive' is missing or not a dict",
        ),
        ('{"format": NaN}', "verification.json is not valid UTF-8 JSON (NaN is not JSON)"),
        ("[" * 100_000, None),
        (" " * (MAX_BYTES + 1), "verification.json is larger than 4 MiB"),
    ],
)
def test_malformed_verifications_are_refused_with_a_reason(tmp_path, text, reason):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / VERIFICATION).write_text(text, encoding="utf-8")
    (tmp_path / "empty").mkdir()
    found = read_submissions(tmp_path)
    assert [(s.name, s.shown, s.verdict) for s in found] == [
        ("empty", False, "unverified"),
        ("s", False, "unverified"),
    ]
    assert found[0].reason == NO_VERIFICATION
    if reason is not None:
        assert found[1].reason == reason
    else:
        assert found[1].reason.startswith("verification.json is not valid UTF-8 JSON")


def test_a_verified_row_the_report_cannot_read_is_refused_not_raised(setup):
    """Verified as it is (hashes match), but its record is not one: refused with the reason."""
    _, subs, sub = setup
    rid = committed("lora")[0]
    store = RunStore(sub / "results")
    store.record_path(rid).write_text("{}", encoding="utf-8")
    verify(sub)
    (found,) = read_submissions(subs)
    assert (found.shown, found.verdict) == (False, "unverified")
    assert found.reason.startswith(f"a row cannot be read: {store.row_path(rid)}: its record ")


def test_a_submission_that_read_other_data_is_left_out_not_blocking(tmp_path, setup):
    """Same task, phase and prepared data as the user's rows, other arrays: left out."""
    mine, subs, sub = setup
    row = RunStore(sub / "results").row_path(committed("lora")[0])
    edit_field(row, "data_hash", "0" * 33)
    verify(sub)  # verified as it is now
    md = build(tmp_path, mine, subs)
    assert [r["method"] for r in demo_rows(md)] == ["ssf"]
    (item,) = left_out(md)
    assert item.startswith("- lora-x: unverified: runs ") and "read different arrays" in item


def test_without_submissions_the_board_is_unchanged(tmp_path, setup):
    mine, subs, _ = setup
    plain = build(tmp_path, mine, None, "plain.md")
    csv_plain = (tmp_path / "results.csv").read_bytes()
    lb.generate([mine], leaderboard_path=tmp_path / "default.md")
    assert (tmp_path / "default.md").read_text(encoding="utf-8") == plain
    (tmp_path / "nothing").mkdir()
    assert build(tmp_path, mine, tmp_path / "nothing", "empty.md") == plain
    assert (tmp_path / "results.csv").read_bytes() == csv_plain
    assert build(tmp_path, mine, subs, "with.md") != plain
    assert not lb.is_stale([mine], tmp_path / "with.md", submissions=subs)
    assert lb.is_stale([mine], tmp_path / "with.md")


def test_the_outputs_go_where_the_results_folders_say(tmp_path, setup, monkeypatch, capsys):
    mine, subs, sub = setup
    monkeypatch.chdir(tmp_path)
    mine.rename("results")  # the reference folder: ./leaderboard.md, results/results.csv
    assert main(["leaderboard", "--results", "results", "--submissions", "subs"]) == 0
    assert capsys.readouterr().out.splitlines()[:2] == ["results/results.csv", "leaderboard.md"]
    md = Path("leaderboard.md").read_text(encoding="utf-8")
    assert sorted((r["method"], r["results dir"]) for r in demo_rows(md)) == [
        ("lora ✓", "subs/lora-x/results"),
        ("ssf", "results"),
    ]
    assert (tmp_path / "results" / "plots").is_dir()
    assert sorted(p.name for p in sub.iterdir()) == ["results", VERIFICATION]
    assert list((sub / "results").iterdir()) == [RunStore(sub / "results").runs]
    # another folder beside it: its own home, as without submissions
    copy_rows("ssf", Path("other"))
    assert main(["leaderboard", "--results", "results", "--results", "other", "--submissions",
                 "subs"]) == 0  # fmt: skip
    assert capsys.readouterr().out.splitlines()[:2] == [
        "other/results.csv",
        "other/leaderboard.md",
    ]


def test_a_missing_submissions_folder_is_one_line_and_writes_nothing(tmp_path, setup, capsys):
    mine, _, _ = setup
    with pytest.raises(ResultsError, match="^no submissions folder "):
        lb.generate([mine], tmp_path / "lb.md", submissions=tmp_path / "typo")
    assert main(["leaderboard", "--results", str(mine), "--submissions", str(tmp_path / "typo")])
    err = capsys.readouterr().err
    assert err.startswith(f"pebench: error: no submissions folder {tmp_path / 'typo'}")
    assert err.count("\n") == 1
    assert not (tmp_path / "lb.md").exists() and not (mine / "leaderboard.md").exists()
