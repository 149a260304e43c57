"""README's commands are the ones CI runs, and they exist."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bash_blocks(text: str) -> list[list[str]]:
    blocks, cur = [], None
    for line in text.splitlines():
        if line.strip() == "```bash":
            cur = []
        elif line.strip() == "```" and cur is not None:
            blocks.append(cur)
            cur = None
        elif cur is not None:
            cur.append(line.strip())
    return blocks


def test_ci_runs_the_readme_install_and_test_commands():
    text = (ROOT / "README.md").read_text()
    install = _bash_blocks(text)[0]
    test = _bash_blocks(text.split("\n## Test\n", 1)[1])[0]  # the block under "## Test"
    ci = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()]
    for cmd in install[:2] + test:
        assert cmd in ci, f"README command not run by .ci/run: {cmd}"
    assert install[2].startswith("pebench run --method")
    assert install[3] == "pebench leaderboard"  # the user's runs (my-results/), not the reference


def test_constraints_pin_a_cpu_torch():
    pins = (ROOT / "constraints-cpu.txt").read_text().split()
    assert any(p.startswith("torch==") for p in pins)
