"""docs/plugins.md, the method author's guide, states what the code does (#28 item 1)."""

from __future__ import annotations

import re
from pathlib import Path

import pebench.vit as vit
from pebench.conformance import CHECKS

DOC = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text(encoding="utf-8")
README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def test_every_conformance_check_is_explained_in_the_table():
    rows = re.findall(r"^\| `([a-z_]+)` \|", DOC, flags=re.M)
    checks = [r for r in rows if r in CHECKS or not hasattr(vit, r)]
    assert checks == list(CHECKS)
    assert f"the same {len(CHECKS)} checks" in DOC


def test_the_slot_diagram_is_the_one_of_pebench_vit():
    diagram = vit.__doc__.split("::", 1)[1].split("* :class:", 1)[0]
    lines = [line.strip() for line in diagram.strip().splitlines()]
    assert all(line in DOC for line in lines)
    for slot in vit.SLOTS:
        assert f"`{slot}`" in DOC


def test_the_helpers_named_exist():
    named = set(re.findall(r"`([a-z_]+)\(", DOC))
    helpers = named - {"attach", "trainable", "expected_num_params", "merge", "mergeable_on",
                       "backbone_key", "option", "vit_dims", "requires_grad_", "forward_features",
                       "forward_head", "reset_classifier"}  # fmt: skip
    assert helpers and all(callable(getattr(vit, h, None)) for h in helpers), helpers


def test_the_readme_sends_authors_to_the_guide_and_to_the_catalog_step():
    section = README.split("## Adding a method", 1)[1].split("\n## ", 1)[0]
    assert "docs/plugins.md" in section
    assert "python -m pebench.method_catalog" in section and "methods/catalog.json" in section
