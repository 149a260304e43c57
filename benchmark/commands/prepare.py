"""``pebench prepare``: decode a real suite's images once into a checked cache.

A command module (:mod:`pebench.commands`): :data:`NAME`, :func:`add_parser`, :func:`main`.
Errors in the data (malformed lists, missing images, wrong sizes, train/test overlap, missing
task folders, a full disk...) print one ``pebench: error: ...`` line and return exit code 2;
nothing half-written is left behind. ``--data-dir`` is the raw data (only read); everything
written goes into ``--cache-dir``, the folder ``pebench run --data-dir`` then reads, for image
and video suites alike.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

NAME = "prepare"
EXIT_USAGE = 2


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``prepare`` subcommand to ``pebench``'s subparsers and return it."""
    from pebench.datasets.sources import SOURCES, help_text

    p = subparsers.add_parser(
        NAME,
        help="decode a suite's images once into a checked cache (VTAB-1k, FGVC, few-shot); "
        "index and decode-check a video suite",
        description="Read a suite from the format you have, decode and resize every image once, "
        "and write uint8 arrays plus a manifest (sizes, labels, hashes); video suites get a "
        "manifest of decode-checked videos. Everything goes into --cache-dir (never into "
        "--data-dir); afterwards pass the cache folder to `pebench run --data-dir`. Data "
        "layouts: docs/data.md.",
    )
    p.add_argument(
        "tasks", metavar="SUITE", help="suite, suite:group or task ids (e.g. vtab, vtab:natural)"
    )
    p.add_argument(
        "--source",
        choices=sorted(SOURCES),
        help=f"image suites (required there): {help_text()}",
    )
    p.add_argument(
        "--data-dir",
        required=True,
        help="the raw data: folder holding the task folders or video datasets, only read "
        "(--source tfds: the TFDS data_dir)",
    )
    p.add_argument(
        "--manual-dir",
        help="--source tfds: TFDS manual_dir with the manually downloaded archives of "
        "resisc45 / diabetic_retinopathy; those builders are then built there (no network)",
    )
    p.add_argument(
        "--download",
        action="store_true",
        help="--source tfds: let TFDS download and build missing builders (uses the network; "
        "by default missing TFDS data is an error)",
    )
    p.add_argument(
        "--cache-dir",
        help="where the cache (video: the manifests) goes (default: $PEBENCH_CACHE or "
        "~/.cache/pebench); give the same folder to `pebench run --data-dir`",
    )
    p.add_argument("--image-size", type=int, default=224, help="stored side length (224)")
    p.add_argument("--workers", type=int, help="decoding threads (default: min(8, cores))")
    p.add_argument(
        "--force",
        action="store_true",
        help="re-decode even an up-to-date cache; replaces a cache prepared from another source",
    )
    p.add_argument(
        "--allow-overlap",
        action="store_true",
        help="record images shared by train and test instead of failing",
    )
    p.add_argument(
        "--nonstandard-sizes",
        action="store_true",
        help="image suites: accept split sizes other than the suite's (e.g. a few hundred "
        "images per split, to try a pipeline on a laptop); recorded in the manifest and in "
        "every run row's data_format (<format>+nonstandard-sizes), so such rows never mix "
        "with standard ones",
    )
    p.add_argument("--verify", action="store_true", help="afterwards, re-check every array hash")
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="video: record undecodable videos in the manifest (a budget with skip_bad drops "
        "them) instead of failing",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _prepare_video(args: argparse.Namespace, specs: list, cache_dir: Path) -> int:
    """Index and decode-check video tasks; each manifest goes into the cache folder."""
    from pebench.datasets.video import prepare_video

    reports = prepare_video(
        specs,
        args.data_dir,
        cache_dir,
        skip_bad=args.skip_bad,
        workers=args.workers,
        progress=not args.quiet,
    )
    if args.json:
        out = [{**vars(r), "manifest": str(r.manifest)} for r in reports]
        print(json.dumps({"tasks": out}, indent=1, default=str))
        return 0
    for r in reports:
        splits = ", ".join(f"{name} {n:,}" for name, n in r.splits.items())
        bad = (
            f"{len(r.skipped)} bad videos recorded (runs skip them only if the budget allows)"
            if r.skipped
            else "all decode"
        )
        print(
            f"{r.task:<24} {r.checked:,} videos checked, {bad}; splits: {splits}; data hash "
            f"{r.data_hash} ({r.seconds:.1f} s) -> {r.manifest}"
        )
    print(f"run with: pebench run --tasks {args.tasks} --data-dir {cache_dir}", file=sys.stderr)
    return 0


def main(args: argparse.Namespace) -> int:
    """Run ``pebench prepare``; returns the exit code (0 ok, 2 bad input or data)."""
    from pebench.datasets import resolve_tasks
    from pebench.datasets.cache import default_cache_dir, prepare, verify
    from pebench.datasets.formats import DatasetError
    from pebench.datasets.sources import SOURCES
    from pebench.registry import RegistryError

    cache_dir = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    try:
        specs = resolve_tasks(args.tasks)
        video = [s for s in specs if s.modality == "video"]
        if video:
            if len(video) != len(specs):
                raise DatasetError("prepare video and image tasks in separate commands")
            if args.nonstandard_sizes:
                raise DatasetError("--nonstandard-sizes applies to image suites only")
            return _prepare_video(args, video, cache_dir)
        if args.source is None:
            raise DatasetError(
                f"--source is required for image suites ({', '.join(sorted(SOURCES))})"
            )
        reports = prepare(
            args.tasks,
            args.source,
            args.data_dir,
            cache_dir,
            args.image_size,
            force=args.force,
            allow_overlap=args.allow_overlap,
            workers=args.workers,
            progress=not args.quiet,
            manual_dir=args.manual_dir,
            download=args.download,
            nonstandard_sizes=args.nonstandard_sizes,
        )
        hashes = verify(args.tasks, cache_dir, args.image_size) if args.verify else {}
    except (DatasetError, RegistryError) as err:
        print(f"pebench: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        out = [{**vars(r), "path": str(r.path), "seconds": round(r.seconds, 3)} for r in reports]
        print(json.dumps({"units": out, "manifest_hashes": hashes}, indent=1))
    else:
        for r in reports:
            total = sum(r.splits.values())
            print(
                f"{r.unit:<28} {r.status:<10} {len(r.splits)} splits, {total} images "
                f"({r.decoded} decoded, {r.seconds:.1f} s) -> {r.path}"
            )
        for task, h in hashes.items():
            print(f"verified {task:<36} manifest_hash={h}")
        print(
            f"run with: pebench run --tasks {args.tasks} --data-dir {cache_dir} "
            f"(a budget with image size {args.image_size})",
            file=sys.stderr,
        )
    return 0


__all__ = ["NAME", "add_parser", "main"]
