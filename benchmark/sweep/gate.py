"""The conformance gate of ``pebench run``: checks in a fresh process, a pass remembered as a hint.

:func:`check_method` runs :data:`RUN_CHECKS` on one method before its first run:

* **In their own process**, started from the same ``forkserver`` as a run's process
  (:func:`pebench.sweep.worker.start_forkserver`: same preloaded modules, same ``sys.argv``, same
  environment and process setup), running :func:`pebench.exercise.serve`. The plugin is imported
  there, never in this process before the verdict: a plugin's import-time code cannot patch the
  gate. The driver relies on that process for the verdict only, received as JSON bytes (never
  unpickled) and checked to name exactly the checks asked for; a crash, a timeout or a malformed
  answer refuses the method.
* **On the sweep's config and batch sizes**: the preset and ``--set`` values of the sweep, and the
  largest evaluation batch its runs use (:func:`largest_eval_batch`), with a smaller and a larger
  one, every size, class count, weight and input drawn from a seed taken from OS entropy per
  gate. A failure names the seed; ``pebench check NAME --seed S`` (with the same ``--preset``,
  ``--set`` and ``--eval-batch``) reproduces it.

**The memo** (``<results>/checks/<method>.json``) remembers passes so a resumed or extended sweep
does not pay for the checks again. It is a hint, not a proof: a pass is reused only for exactly
the same key (:func:`memo_key`: method, origin, the method's source hash
(:func:`pebench.method_source.method_source`), pebench's own source hash and version, preset,
``--set`` values, evaluation batch and the list of checks); anything else (an edited plugin
without a version bump, another config, a memo in an older format, a stale or forged entry for
another key) runs the checks again, and a failure is never remembered. The key is computed
without importing the plugin (from its metadata and files), which is why it holds the preset and
the ``--set`` values as given rather than the built config: the same source, preset and values
give the same config. A memo forged for the exact key of a failing method is
equivalent to ``--skip-checks`` (whoever can write the results folder can pass that flag): the
checks are a service to honest authors, and what protects the numbers from dishonest code is the
structure of the run (issue 26 item 1: evaluation of the saved state in a fresh process), not the
gate.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

import pebench
from pebench.errors import PebenchError
from pebench.methods import PEFT_PREFIX, registry
from pebench.store import RunStore

#: the conformance checks ``pebench run`` requires of a method before its first run: the whole
#: suite (:data:`pebench.conformance.CHECKS`, in its order; a few seconds per method on the tiny
#: test ViTs), so ``pebench check`` and the gate never disagree: a method whose closed-form count
#: or merge is wrong does not run with rows that call it conformant. Spelled here (the planner
#: imports no torch); ``tests/test_checks_field.py`` keeps it equal to the suite.
RUN_CHECKS = (
    "registration",
    "timm_api",
    "trainable_set",
    "param_count",
    "identity_at_init",
    "training_step",
    "merge",
    "state_dict_roundtrip",
    "dropout_modes",
    "non_vit_fails",
    "per_sample_independence",
    "token_counts",
    "measurable",
)
#: seconds the checks' process may take before the method is refused
TIMEOUT_S = 600.0
#: passes one memo file keeps (the most recent; one per config of the method)
MEMO_PASSES = 16
#: the largest verdict accepted from the checks' process, in bytes
VERDICT_BYTES = 1 << 20
#: the checks' process's name (``multiprocessing``'s): that of the run stage whose work the
#: batch-dependence check repeats, so the name tells a plugin nothing
STAGE_NAME = "prediction"
#: the evaluation batch without a sweep (``pebench.exercise.INDEPENDENCE_BATCH``)
DEFAULT_EVAL_BATCH = 32


class ConformanceError(PebenchError, ValueError):
    """A method fails the conformance checks ``pebench run`` requires (``--skip-checks``)."""


def largest_eval_batch(budget: Any, device: str = "auto") -> int:
    """The largest evaluation batch of a run under ``budget`` on ``device`` (``RunOptions``').

    :meth:`pebench.budget.Budget.eval_batch_size` of the device the runs will use (``auto``:
    CUDA when there is one; :func:`pebench.sweep.executors.cuda_available` asks torch only where
    a GPU's device files exist, so planning on a CPU machine imports no torch).
    """
    from pebench.sweep.executors import cuda_available

    return budget.eval_batch_size(
        device.startswith("cuda") or (device == "auto" and cuda_available())
    )


def memo_key(
    name: str,
    preset: str | None = None,
    overrides: dict[str, Any] | None = None,
    eval_batch: int = DEFAULT_EVAL_BATCH,
) -> dict[str, Any]:
    """What a remembered pass must match exactly to be reused (nothing of the plugin imported)."""
    from pebench.method_source import method_source, pebench_source

    return {
        "method": name,
        "origin": registry.origin_of(name),
        "source": method_source(name),
        "pebench": pebench.__version__,
        "pebench_source": pebench_source(),
        "preset": preset or "default",
        "overrides": {k: str(v) for k, v in sorted((overrides or {}).items())},
        "eval_batch": eval_batch,
        "checks": list(RUN_CHECKS),
    }


def _remembered(store: RunStore, name: str) -> list[dict[str, Any]]:
    """The passes the memo of ``name`` lists (anything unreadable or of another format: none)."""
    memo = store.read_memo(name)
    passes = memo.get("passes") if isinstance(memo, dict) else None
    return [p for p in passes if isinstance(p, dict)] if isinstance(passes, list) else []


def _verdict(raw: bytes) -> list[dict[str, Any]]:
    """The results the checks' process sent (its ``done`` message), validated, never unpickled.

    Raises:
        ConformanceError: the process reported an error instead of results.
        ValueError: not one result per check asked for, in order.
    """
    head = json.loads(raw.decode("utf-8"))
    if not isinstance(head, dict) or not isinstance(head.get("body"), dict):
        raise ValueError("not a message")
    body = head["body"]
    if head.get("kind") == "error" or isinstance(body.get("error"), str):
        raise ConformanceError(str(body.get("error", "")).splitlines()[0])
    data = body.get("results")
    names = [r.get("name") for r in data if isinstance(r, dict)] if isinstance(data, list) else []
    if names != list(RUN_CHECKS) or not all(
        isinstance(r.get("passed"), bool) and isinstance(r.get("detail"), str) for r in data
    ):
        raise ValueError("the answer does not list the checks asked for")
    return data


def _process(request: dict[str, Any], env: dict[str, str]) -> tuple[Any, Any]:
    """The checks' process (not started) and the read end of its pipe.

    Started as a run's stages are (:mod:`pebench.stage`: the same forkserver, preload, process
    setup and outer frames, a stage's name); where pebench has no run stages, as its run
    processes are (:mod:`pebench.sweep.worker`'s forkserver).
    """
    from pebench import exercise

    try:  # the run stages (issue 26 item 1)
        from pebench.stage import _main, context
    except ImportError:
        _main = None
        try:
            from pebench.sweep.worker import _context as context
        except ImportError:  # pragma: no cover - neither layout
            import multiprocessing as mp

            def context() -> Any:
                return mp.get_context("spawn")

    from pebench.sweep.worker import start_forkserver

    start_forkserver()  # the runs' forkserver (SIGINT ignored), started once per driver
    ctx = context()
    recv, send = ctx.Pipe(duplex=False)
    if _main is not None:
        target, args = _main, (exercise.stage, send, env, request)
    else:
        target, args = exercise.serve, (send, env, request)
    proc = ctx.Process(target=target, args=args, daemon=False, name=STAGE_NAME)
    return proc, (recv, send)


def _exercise(request: dict[str, Any], env: dict[str, str], timeout_s: float) -> list[dict]:
    """Run the checks of ``request`` in a run-like process; their results.

    Raises:
        ConformanceError: the process died, timed out or answered something else than results.
    """
    proc, (recv, send) = _process(request, env)
    try:
        proc.start()
    except Exception as err:  # a class registered at run time that cannot be sent
        recv.close()
        msg = f"the method could not be sent to the checks' process: {err}"
        raise ConformanceError(msg) from None
    finally:
        send.close()
    raw, deadline = None, time.monotonic() + timeout_s
    try:
        while raw is None and time.monotonic() < deadline:
            if recv.poll(0.1):
                raw = recv.recv_bytes(VERDICT_BYTES)
            elif not proc.is_alive() and not recv.poll(0):
                break
    except (EOFError, OSError) as err:  # closed without an answer, or one too large
        raise ConformanceError(
            f"the checks' process answered nothing usable ({type(err).__name__})"
        ) from None
    finally:
        proc.join(5.0)
        if proc.is_alive():
            proc.kill()
            proc.join()
        recv.close()
    if raw is None:
        if time.monotonic() >= deadline:
            raise ConformanceError(f"the checks did not finish within {timeout_s:.0f} s")
        raise ConformanceError(f"the checks' process exited with code {proc.exitcode}, no verdict")
    try:
        return _verdict(raw)
    except (ValueError, UnicodeDecodeError, AttributeError) as err:
        raise ConformanceError(f"the checks' process sent a malformed verdict ({err})") from None


def _first_line(text: str, limit: int = 400) -> str:
    """The first line of ``text``, at most ``limit`` characters (it comes from plugin code)."""
    line = (text.splitlines() or ["(no detail)"])[0]
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _request(
    name: str, preset: str | None, overrides: dict[str, Any], eval_batch: int, seed: int
) -> dict[str, Any]:
    """What the checks' process is asked: the method, the checks and the :class:`Setting`."""
    # registered in this process (not by the peft bridge, which the child runs itself): the
    # class itself is sent, by reference
    runtime = registry.target_of(name) is None and not name.startswith(PEFT_PREFIX)
    return {
        "name": name,
        "cls": registry.get(name) if runtime else None,
        "origin": registry.origin_of(name),
        "only": list(RUN_CHECKS),
        "setting": {
            "preset": preset,
            "overrides": sorted((overrides or {}).items()),
            "eval_batch": eval_batch,
            "seed": seed,
        },
    }


def check_method(
    name: str,
    results_dir: Path,
    preset: str | None = None,
    overrides: dict[str, Any] | None = None,
    eval_batch: int = DEFAULT_EVAL_BATCH,
    env: tuple[tuple[str, str], ...] = (),
    threads: int | None = None,
    timeout_s: float = TIMEOUT_S,
) -> None:
    """Run :data:`RUN_CHECKS` on ``name`` as a sweep uses it; refuse a failure; remember a pass.

    Args:
        name: registered method name.
        results_dir: the results folder whose memo remembers passes.
        preset: the sweep's preset (``None``: ``default``).
        overrides: the sweep's ``--set`` values.
        eval_batch: the largest evaluation batch of the sweep's runs (:func:`largest_eval_batch`).
        env: environment of the runs' processes (``RunOptions.env``), set in the checks' too.
        threads: torch threads of the runs' processes.
        timeout_s: seconds the checks may take.

    Raises:
        ConformanceError: one line naming the method, the failed checks and what they saw, and
            the seed that reproduces them.
    """
    if name.startswith(PEFT_PREFIX):
        registry.get(name)  # built lazily by the (built-in) peft bridge
    store = RunStore(results_dir)
    key = memo_key(name, preset, overrides, eval_batch)
    passes = _remembered(store, name)
    if key in passes:
        return
    seed = secrets.randbits(32)  # OS entropy: nothing a plugin can predict
    request = _request(name, preset, overrides or {}, eval_batch, seed) | {"threads": threads}
    how = (
        f"checks seed {seed}: `pebench check {name}"
        + (f" --preset {preset}" if preset and preset != "default" else "")
        + "".join(f" --set {k}={v}" for k, v in sorted((overrides or {}).items()))
        + f" --eval-batch {eval_batch} --seed {seed}` reproduces it"
    )
    try:
        results = _exercise(request, dict(env), timeout_s)
    except ConformanceError as err:
        raise ConformanceError(
            f"method {name!r} fails the conformance checks pebench run requires (they could "
            f"not run: {err}); {how}; --skip-checks runs it anyway and marks its rows "
            "`checks=skipped`"
        ) from None
    if failed := [r for r in results if not r["passed"]]:
        detail = "; ".join(f"{r['name']}: {_first_line(r['detail'])}" for r in failed)
        raise ConformanceError(
            f"method {name!r} fails the conformance checks pebench run requires ({detail}); "
            f"{how}; `pebench check {name}` shows every check; --skip-checks runs it anyway "
            "and marks its rows `checks=skipped`"
        )
    store.write_memo(name, {"passes": ([key] + [p for p in passes if p != key])[:MEMO_PASSES]})


__all__ = [
    "DEFAULT_EVAL_BATCH",
    "RUN_CHECKS",
    "ConformanceError",
    "check_method",
    "largest_eval_batch",
    "memo_key",
]
