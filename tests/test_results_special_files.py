"""Row files that are not regular files: refused in one line, never waited on or followed."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from pebench import results
from pebench.cli import main


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_row_file_is_refused_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "0000000000000000.csv"
    os.mkfifo(fifo)
    done: list[str] = []

    def read() -> None:
        try:
            results.read_csv(fifo)
        except results.ResultsError as err:
            done.append(str(err))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(10)
    assert done == [f"{fifo}: not a regular file (a FIFO, device or folder); result files must be "
                    "regular files"]  # fmt: skip


def test_a_symlinked_row_file_is_refused_without_its_targets_text(tmp_path, capsys):
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    (tmp_path / "r" / "runs").mkdir(parents=True)
    link = tmp_path / "r" / "runs" / "0000000000000001.csv"
    link.symlink_to(secret)
    argv = ["leaderboard", "--results", str(tmp_path / "r"), "--output", str(tmp_path / "o.md")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"pebench: error: {link}: a symbolic link; result files must be regular files\n"
    assert "root:x" not in err and not (tmp_path / "o.md").exists()
