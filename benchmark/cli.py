"""The ``pebench`` command line.

``pebench run | status | list | params | check | bench | pretrain | prepare | leaderboard``.
Bad input (unknown names, bad ``--set`` values, missing weights files, bad executor options,
malformed result CSVs) prints one clear error and exits with 2, before anything is written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from pebench import __version__
from pebench.cli_args import (
    device,
    executor_options,
    print_outcome,
    progress_line,
    run_options,
)
from pebench.cli_plan import add_overrides, add_selection, method_list, plan
from pebench.errors import PebenchError, UserError
from pebench.submission import cli as submission_cli

EXIT_USAGE = 2
#: what a shell reports for a process stopped by SIGINT (128 + 2)
EXIT_INTERRUPTED = 130
#: the top-level ``--help`` text (plain text: argparse prints it as is)
DESCRIPTION = (
    "pebench: parameter-efficient fine-tuning of Vision Transformers, benchmarked under one "
    "versioned budget per suite. Start with `pebench run --method lora` (the demo suite, "
    "offline); `pebench list methods|tasks|suites|budgets` shows what is there, and "
    "`pebench COMMAND --help` the options of each command."
)
#: the methods ``pebench bench --harness`` measures by default (``--methods all``: every one)
HARNESS_METHODS = "linear,lora"
#: what a shell reports for a program ended by SIGPIPE (128 + 13)
EXIT_BROKEN_PIPE = 141


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    p = argparse.ArgumentParser(prog="pebench", description=DESCRIPTION)
    p.add_argument("--version", action="version", version=f"pebench {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="train and evaluate a method on tasks under a budget")
    add_selection(r)
    r.add_argument("--device", default="auto", type=device, help="auto, cpu, cuda or cuda:N")
    r.add_argument(
        "--threads", type=int, help="torch threads per run (default: the cores shared out)"
    )
    r.add_argument(
        "--data-workers",
        type=int,
        default=0,
        help="DataLoader worker processes per run for datasets decoded per example (video); "
        "changes speed only, never the numbers",
    )
    r.add_argument(
        "--nproc-per-run",
        type=int,
        default=1,
        help="processes (GPUs) per run: > 1 runs each run with torch DDP launched by torchrun "
        "(gloo on CPU, nccl on GPU); only rank 0 writes the row",
    )
    r.add_argument("--timeout", type=float, help="seconds per run (default: the budget's)")
    r.add_argument(
        "--compile",
        action="store_true",
        help="train and evaluate through torch.compile (recorded in each row's compile column; "
        "changes round-off only)",
    )
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.add_argument(
        "--log-to",
        default="",
        metavar="TRACKERS",
        help="also send each run's epoch records to tensorboard and/or wandb (offline mode), "
        "comma-separated; every run always writes <results>/logs/<run_id>.log and .epochs.csv",
    )
    r.add_argument(
        "--epoch-val",
        action="store_true",
        help="score the validation split after every epoch of the search runs, for the logs "
        "(selection still uses the last epoch; the test split is never scored early)",
    )
    r.add_argument(
        "--keep-state",
        action="store_true",
        help="keep each run's tunable state (method tensors and head, safetensors: exactly what "
        "was counted and evaluated) beside its row, as runs/<run_id>.state.safetensors",
    )
    r.add_argument(
        "--rerun",
        action="store_true",
        help="run the grid again although rows exist (they are moved to runs/replaced/<time>/, "
        "never deleted); by default recorded runs are reused",
    )
    r.add_argument(
        "--skip-checks",
        action="store_true",
        help="run methods without the conformance checks pebench run requires (rows record "
        "checks=skipped and the leaderboard marks them)",
    )
    ex = r.add_argument_group("executor (where the runs execute)")
    ex.add_argument("--executor", default="local", choices=["local", "slurm", "ray"])
    ex.add_argument(
        "--runs-per-device",
        type=int,
        help="local: concurrent runs sharing each GPU (default 1); small backbones or tasks "
        "fill a large GPU only with several; each run's device-resident data gets its share",
    )
    ex.add_argument(
        "--max-parallel",
        type=int,
        help="concurrent runs: local (default one per GPU, or one per CPU core up to 8, each "
        "with its share of the threads), Slurm array parallelism, "
        "or the size of a Ray started here (x --cpus-per-run CPUs)",
    )
    ex.add_argument("--partition", help="slurm: partition")
    ex.add_argument("--time-min", type=int, help="slurm: minutes per job (default: timeout + 5)")
    ex.add_argument("--gpus-per-job", type=int, help="slurm: GPUs per job (default 0)")
    ex.add_argument("--cpus-per-job", type=int, help="slurm: CPUs per job (= torch threads)")
    ex.add_argument("--log-dir", help="slurm: folder of job logs (default pebench-logs)")
    ex.add_argument("--ray-address", help="ray: cluster address (default: start a local Ray)")
    ex.add_argument("--cpus-per-run", type=float, help="ray: CPUs per run (default 1)")
    ex.add_argument("--gpus-per-run", type=float, help="ray: GPUs per run (default 0)")

    st = sub.add_parser("status", help="done / running / failed / missing runs of a sweep")
    add_selection(st)
    st.add_argument("--json", action="store_true")

    es = sub.add_parser(
        "estimate", help="FLOPs and GPU hours of a sweep before running it (counted, not trained)"
    )
    es.add_argument("--method", required=True, help="NAME[.PRESET] or a comma-separated list")
    es.add_argument("--tasks", help="suite(s) and/or task(s), comma-separated (default: vtab)")
    es.add_argument(
        "--budget",
        help="budget id or a budget file PATH (.toml or .json) (default: the suite's budget)",
    )
    es.add_argument("--backbone", help="timm model name (default: the budget's backbone)")
    es.add_argument(
        "--tflops",
        type=float,
        default=150.0,
        help="sustained TFLOP/s of your GPU for this workload (default 150: an assumption, "
        "about 40%% of an H100's dense bf16 peak; measure yours)",
    )
    es.add_argument(
        "--measure",
        metavar="DEVICE",
        help="take the throughput from a short measured run of the harness on DEVICE (cpu, "
        "cuda, cuda:N: random weights, the budget's image size and batch) instead of --tflops",
    )
    es.add_argument("--json", action="store_true")
    from pebench import precision_cli

    precision_cli.add_arguments(es)

    ls = sub.add_parser("list", help="list methods, tasks, suites or budgets")
    ls.add_argument("what", choices=["methods", "tasks", "suites", "budgets"])
    ls.add_argument("--json", action="store_true", help="one JSON list instead of text")
    ls.add_argument(
        "--peft",
        action="store_true",
        help="methods: also probe the Hugging Face peft types the installed peft supports "
        "(imports torch and peft: seconds)",
    )
    ls.add_argument(
        "--load",
        action="store_true",
        help="methods: import third-party method plugins to show their titles, presets and "
        "caps (imports torch: seconds); by default they are listed from their entry points",
    )
    ls.add_argument("--suite", help="tasks: only the tasks of this suite (e.g. vtab)")

    pa = sub.add_parser("params", help="print the parameter count of a method on a backbone")
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

    ch = sub.add_parser("check", help="run the conformance suite for one method")
    ch.add_argument("method", help="method NAME[.PRESET] (pebench list methods)")
    ch.add_argument("--preset", help="method preset (default: the NAME's, else default)")
    add_overrides(ch)
    ch.add_argument(
        "--eval-batch",
        type=int,
        default=32,
        help="the largest evaluation batch to check outputs at (default: 32)",
    )
    ch.add_argument(
        "--seed",
        type=int,
        help="draw sizes, classes, weights and inputs from this seed, as the pebench run gate "
        "does (its failure names the seed); default: fixed draws",
    )

    be = sub.add_parser("bench", help="side-by-side method speed relative to the frozen backbone")
    be.add_argument(
        "--methods",
        help="comma-separated names, or 'all' (default: all; with --harness "
        f"{HARNESS_METHODS}: the harness measures each method for about a minute on a CPU)",
    )
    be.add_argument(
        "--backbone",
        default="pebench_vit_micro",
        help="timm model name (default: pebench_vit_micro)",
    )
    be.add_argument(
        "--image-size", type=int, default=32, help="input side length in pixels (default: 32)"
    )
    be.add_argument("--batch-size", type=int, default=64, help="images per step (default: 64)")
    be.add_argument("--steps", type=int, default=5, help="steps per measurement")
    be.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median taken)")
    be.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    be.add_argument("--json", action="store_true", help="one JSON list instead of a table")
    be.add_argument(
        "--harness",
        action="store_true",
        help="pebench's training/eval loops against a bare timm + torch loop on the same model, "
        "batch, optimizer and data: harness / bare ratios (median [IQR] over the rounds)",
    )

    pt = sub.add_parser("pretrain", help="pretrain the micro ViT on formula-driven fractals")
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

    from pebench import prepare_cli

    prepare_cli.add_parser(sub)

    from pebench import export_cli

    lb = sub.add_parser(
        "leaderboard",
        help="regenerate leaderboard.md, results.csv and plots (PNG + PDF) from results",
        description="Rebuild leaderboard.md, results.csv and the figures from the run rows, as "
        "one unit (a kill or a full disk leaves the previous set or the new one). With the "
        "reference folder `results` they go to ./leaderboard.md, results/results.csv and "
        "results/plots/; with any other folder into the first such folder "
        "(<dir>/leaderboard.md, <dir>/results.csv, <dir>/plots/).",
    )
    export_cli.add_results_option(lb)
    lb.add_argument(
        "--output",
        metavar="PATH",
        help="leaderboard.md to write or check; results.csv and plots/ go beside it (default: "
        "see above)",
    )
    lb.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if the leaderboard is stale (completes a killed write first)",
    )
    lb.add_argument(
        "--skip-bad",
        action="store_true",
        help="leave out result files that fail validation (each named on stderr) instead of "
        "refusing to build",
    )
    lb.add_argument(
        "--submissions",
        metavar="DIR",
        help="folder of verified submissions (`pebench verify --out`): each verified one joins "
        "the tables marked ✓; an unverified or failed one is listed with its reason, never "
        "mixed into the tables",
    )
    export_cli.add_parser(sub)
    submission_cli.add_parsers(sub)
    from pebench import compare_cli

    compare_cli.add_parser(sub)
    return p


# ------------------------------------------------------------------------------- commands --
def cmd_run(args: argparse.Namespace) -> int:
    """``pebench run``: every method in ``--method`` (comma-separated, or ``all``)."""
    from pebench.sweep.dispatch import dispatch
    from pebench.sweep.executors import make_executor
    from pebench.sweep.plan import config_summary
    from pebench.sweep.rerun import announce, finish

    where = executor_options(args)
    # before any run; the weights load even with --skip-checks (a bad file is one line)
    sweeps = plan(args, run_options(args), checks=not args.skip_checks, load_weights=True)
    for sweep in sweeps:
        print(f"pebench run {config_summary(sweep)}", file=sys.stderr)
    if line := announce(sweeps, args.rerun):
        print(line, file=sys.stderr)
    try:
        with make_executor(where) as executor:
            if getattr(executor, "cluster", "slurm") != "slurm":
                print(
                    f"pebench run: sbatch not found; submitit runs the jobs on its "
                    f"{executor.cluster!r} cluster",
                    file=sys.stderr,
                )
            rows = dispatch(sweeps, executor, on_row=_progress_printer(sweeps))
    except KeyboardInterrupt:
        away = "" if where.kind == "local" else f" ({where.kind} jobs already started keep running)"
        print(
            f"pebench: interrupted; finished runs are kept in {args.results}/runs/, the runs in "
            f"progress were stopped without a row{away}; rerun the same command to continue",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    finish(sweeps)  # a journalled --rerun of these grids ran to the end
    return print_outcome(rows, args.results)


def _progress_printer(sweeps: list) -> Callable[[dict[str, Any]], None]:
    """A callback printing one line (stderr) per run finished by this invocation."""
    import datetime as dt

    from tqdm.auto import tqdm

    from pebench.sweep.rerun import grid_size

    started = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    total, seen = grid_size(sweeps), set()

    def on_row(row: dict[str, Any]) -> None:
        seen.add(row["run_id"])  # a retried run delivers a row per attempt: count it once
        if str(row.get("created_at") or "") >= started:  # run now, not found recorded
            tqdm.write(progress_line(row, len(seen), total), file=sys.stderr)

    return on_row


def cmd_status(args: argparse.Namespace) -> int:
    """``pebench status``: done / running / failed / missing runs of the selected grid."""
    from pebench.sweep.status import format_table, other_code, summarize, sweep_states

    sweeps = plan(args, checks=False, unprepared_ok=True)
    summary = summarize(sweep_states(sweeps), other_code(sweeps))
    print(json.dumps(summary, indent=1) if args.json else format_table(summary))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """``pebench list methods|tasks|suites|budgets`` (torch-free except third-party methods)."""
    from pebench import listing

    if args.what == "methods":
        items = listing.methods(peft=args.peft, load=args.load)
    elif args.what == "tasks":
        items = listing.tasks(args.suite)
    else:
        items = getattr(listing, args.what)()
    if args.json:
        print(json.dumps(items, indent=1, default=str))
        return 0
    print(listing.format_items(items))
    if args.what in ("tasks", "suites"):
        for problem in listing.suite_problems():
            print(f"pebench: refused {problem}", file=sys.stderr)
    if args.what == "methods":
        for problem in listing.method_problems():
            print(f"pebench: refused {problem}", file=sys.stderr)
        if listing.has_unloaded(items):
            print(listing.LOAD_HINT)
        if not args.peft:
            print(listing.PEFT_HINT)
    return 0


def cmd_estimate(args: argparse.Namespace) -> int:
    """``pebench estimate``: images × counted FLOPs ÷ sustained throughput, per method."""
    if args.precision is not None:  # seeds from a precision target (torch-free)
        from pebench import precision_cli

        return precision_cli.cmd_precision(args)
    from pebench.budget import get_budget
    from pebench.datasets import get_suite, resolve_tasks
    from pebench.estimate import estimate, format_table
    from pebench.methods import split_spec

    if args.tflops <= 0:
        raise UserError(f"--tflops must be positive, got {args.tflops}")
    specs = resolve_tasks(args.tasks or "vtab")
    budget = get_budget(args.budget or get_suite(specs[0].suite).default_budget)
    views = budget.video.views if budget.video else 1
    out = []
    methods = method_list(args.method)
    say = _say("pebench estimate --measure")
    if args.measure:
        say(
            f"{len(methods)} method(s) on {args.measure}: each a warm-up epoch, a timed epoch "
            f"and two evaluations of 20 batches of {budget.batch_size} at {budget.image_size} px; "
            "the warm-up epoch of each says how long the rest takes"
        )
    for method in methods:
        name, preset = split_spec(method)
        e = estimate(
            name, specs, budget, args.backbone, preset=preset or "default", test_views=views
        )
        row = {**e.as_dict(), "method": method, "tflops": args.tflops}
        if args.measure:
            from pebench.harness import measure

            m = measure(
                name, budget, args.backbone or budget.backbone, args.measure,
                specs[0].num_classes, preset=preset, say=say,
            )  # fmt: skip
            tr, ev, fixed = m.train_images_per_s, m.eval_images_per_s, m.run_overhead_s
            row.update(
                tflops=e.train_step_flops * tr / 1e12,
                measured_train_images_per_s=tr,
                measured_eval_images_per_s=ev,
                measured_run_overhead_s=fixed,
                measured_on=args.measure,
            )
            out.append({**row, "hours": e.measured_hours(tr, ev, fixed)})
            continue
        out.append({**row, "hours": e.hours(args.tflops)})
    print(json.dumps(out, indent=1) if args.json else format_table(out, budget, len(specs)))
    return 0


def cmd_params(args: argparse.Namespace) -> int:
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


def cmd_check(args: argparse.Namespace) -> int:
    """``pebench check METHOD``."""
    from pebench.conformance import Setting, run_checks
    from pebench.methods import split_spec

    name, preset = split_spec(args.method)
    overrides = tuple(sorted(dict(args.overrides or []).items()))
    setting = Setting(args.preset or preset, overrides, args.eval_batch, args.seed)
    results = run_checks(name, setting=setting)
    for r in results:
        print(
            f"{'PASS' if r.passed else 'FAIL'}  {r.name}"
            + (f"\n      {r.detail}" if r.detail else "")
        )
    failed = sum(not r.passed for r in results)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 0 if failed == 0 else 1


def cmd_leaderboard(args: argparse.Namespace) -> int:
    """``pebench leaderboard`` (pure pandas/matplotlib; never imports torch)."""
    from pebench.export_cli import results_of
    from pebench.report import leaderboard

    folders = results_of(args)
    if args.check:
        stale = leaderboard.is_stale(folders, args.output, submissions=args.submissions)
        output = leaderboard.outputs(folders, args.output).leaderboard
        print(f"{output} is {'STALE' if stale else 'up to date'}")
        return 1 if stale else 0
    skipped: list[str] | None = [] if args.skip_bad else None
    written = leaderboard.generate(
        folders, args.output, skipped=skipped, submissions=args.submissions
    )
    for err in skipped or []:
        print(f"pebench leaderboard: skipped {err}", file=sys.stderr)
    paths = [written["results_csv"], written["leaderboard"], *written["plots"]]
    print(*paths, *written["plots_pdf"], sep="\n")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """``pebench export`` (see :mod:`pebench.export_cli`)."""
    from pebench import export_cli

    return export_cli.cmd_export(args)


def cmd_compare(args: argparse.Namespace) -> int:
    """``pebench compare`` (see :mod:`pebench.compare_cli`)."""
    from pebench import compare_cli

    return compare_cli.cmd_compare(args)


def cmd_bench(args: argparse.Namespace) -> int:
    """``pebench bench`` (``--harness``: the harness against a bare loop)."""
    if args.harness:
        from pebench.harness import as_dicts, to_markdown
        from pebench.harness import run_harness_bench as run_bench
    else:
        from pebench.bench import as_dicts, run_bench, to_markdown

    spec = args.methods or (HARNESS_METHODS if args.harness else "all")
    methods = method_list(spec)
    extra: dict[str, Any] = {}
    if args.harness:
        if spec == "all":
            methods = [m for m in methods if not m.startswith("peft:")]
        extra["say"] = _say("pebench bench --harness")
    rows = run_bench(
        methods, backbone=args.backbone, image_size=args.image_size,
        batch_size=args.batch_size, steps=args.steps, rounds=args.rounds, device=args.device,
        **extra,
    )  # fmt: skip
    if args.json:
        print(json.dumps(as_dicts(rows), indent=1))
    else:
        print(
            to_markdown(
                rows,
                f"backbone {args.backbone} @ {args.image_size}px, batch "
                f"{args.batch_size}, {args.device}, median of {args.rounds} rounds",
            )
        )
    return 0


def _say(prefix: str) -> Callable[[str], None]:
    """A progress printer: one ``prefix: line`` on stderr, flushed at once."""

    def say(line: str) -> None:
        print(f"{prefix}: {line}", file=sys.stderr, flush=True)

    return say


def cmd_pretrain(args: argparse.Namespace) -> int:
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


def cmd_prepare(args: argparse.Namespace) -> int:
    """``pebench prepare`` (see :mod:`pebench.prepare_cli`)."""
    from pebench import prepare_cli

    return prepare_cli.cmd_prepare(args)


COMMANDS = {
    "run": cmd_run,
    "status": cmd_status,
    "list": cmd_list,
    "params": cmd_params,
    "estimate": cmd_estimate,
    "check": cmd_check,
    "bench": cmd_bench,
    "pretrain": cmd_pretrain,
    "prepare": cmd_prepare,
    "leaderboard": cmd_leaderboard,
    "export": cmd_export,
    "compare": cmd_compare,
}
COMMANDS.update(submission_cli.COMMANDS)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pebench`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except PebenchError as err:
        print(f"pebench: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # Ctrl-C outside a sweep (planning, prepare, leaderboard...)
        print("pebench: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `pebench list tasks | head`: the reader left, nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
