"""``pebench params``: the parameter count of a method on a backbone, with its closed form.

A command module (:mod:`pebench.commands`): :data:`NAME`, :func:`add_parser`, :func:`main`. Counts
from the instantiated module (random init: no weights downloaded); exit 1 when the count differs
from the method's ``expected_num_params``.
"""

from __future__ import annotations

import argparse
import json

from pebench.commands._plan import add_overrides

NAME = "params"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``params`` subcommand to ``pebench``'s subparsers and return it."""
    pa = subparsers.add_parser(NAME, help="print the parameter count of a method on a backbone")
    pa.add_argument("--method", required=True, help="NAME[.PRESET] (pebench list methods)")
    pa.add_argument(
        "--backbone",
        default="vit_base_patch16_224",
        help="timm model name, built with random init (default: vit_base_patch16_224)",
    )
    pa.add_argument(
        "--num-classes", type=int, default=100, help="classes of the head (default: 100)"
    )
    add_overrides(pa)
    pa.add_argument("--json", action="store_true", help="one JSON object instead of text")
    return pa


def main(args: argparse.Namespace) -> int:
    """``pebench params``: count from the instantiated module (no weights downloaded)."""
    from pebench.backbones import create_backbone
    from pebench.method import prepare
    from pebench.methods import build_method
    from pebench.vit import vit_dims

    method = build_method(args.method, dict(args.overrides or []))
    model = create_backbone(args.backbone, "random").model
    try:
        expected = method.expected_num_params(vit_dims(model))
    except NotImplementedError:  # peft types without a closed form
        expected = None
    count = prepare(model, method, args.num_classes)
    out = {
        "method": method.name,
        "preset": method.preset,
        "config": json.loads(method.config_json()),
        "backbone": args.backbone,
        "num_classes": args.num_classes,
        **count.as_dict(),
        "params_method_formula": expected,
    }
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        for k, v in out.items():
            print(f"{k:<24} {v:,}" if isinstance(v, int) else f"{k:<24} {v}")
    return 0 if expected in (None, count.method) else 1
