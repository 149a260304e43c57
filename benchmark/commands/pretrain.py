"""``pebench pretrain``: pretrain the micro ViT on formula-driven fractals.

A command module (:mod:`pebench.commands`): :data:`NAME`, :func:`add_parser`, :func:`main`; the
recipe is :mod:`pebench.pretrain`. Writes the checkpoint and its model card next to it, never over
the checkpoint shipped with pebench.
"""

from __future__ import annotations

import argparse
import json

from pebench.errors import UserError

NAME = "pretrain"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``pretrain`` subcommand to ``pebench``'s subparsers and return it."""
    pt = subparsers.add_parser(NAME, help="pretrain the micro ViT on formula-driven fractals")
    pt.add_argument(
        "--out",
        default="pebench_vit_micro-fractal_v1.safetensors",
        help="checkpoint to write (default: in the current folder; never the shipped one)",
    )
    pt.add_argument("--epochs", type=int, help="default: the recipe's (20)")
    pt.add_argument("--per-class", type=int, help="training images per class (default 100)")
    pt.add_argument("--classes", type=int, help="fractal classes (default 200)")
    pt.add_argument("--seed", type=int, default=0)
    pt.add_argument("--device", default="cpu")
    pt.add_argument("--quiet", action="store_true")
    return pt


def main(args: argparse.Namespace) -> int:
    """``pebench pretrain``: writes the checkpoint and its model card next to it."""
    import dataclasses
    from pathlib import Path

    from pebench.backbones import EMBEDDED
    from pebench.fsio import atomic_write_text
    from pebench.pretrain import Recipe, model_card, pretrain

    shipped = {path.resolve() for path, _ in EMBEDDED.values()}
    if Path(args.out).resolve() in shipped:
        raise UserError(
            f"--out {args.out} is the checkpoint shipped with pebench (its SHA-256 is checked by "
            "every run that uses it); write the new one elsewhere"
        )
    changes = {"epochs": args.epochs, "per_class": args.per_class, "num_classes": args.classes}
    recipe = dataclasses.replace(
        Recipe(seed=args.seed), **{k: v for k, v in changes.items() if v is not None}
    )
    card = pretrain(recipe, args.out, device=args.device, progress=not args.quiet)
    atomic_write_text(Path(args.out).with_suffix(".md"), model_card(card))
    print(json.dumps(card, indent=1))
    return 0
