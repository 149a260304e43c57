"""A user's own budget: a TOML or JSON file, checked key by key, its id a hash of its content.

A budget file has the fields of :class:`~pebench.budget.Budget` (:func:`load_budget_file`); its
id is ``file:<file name>@<first 12 hex digits of the SHA-256 of its canonical JSON>``, so an edit
of any value is a new budget and an edit of whitespace or comments is not. Runs never read the
file again: the planner resolves it once and every run carries the budget's values
(:class:`pebench.run.RunSpec`), to forkserver children, DDP ranks and Slurm or Ray jobs alike.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
import re
import stat
from collections.abc import Callable
from dataclasses import MISSING, fields, replace
from pathlib import Path
from typing import Any

from pebench.budget_types import Budget, BudgetError, VideoProtocol
from pebench.registry import RegistryError

#: what a budget file's name may end with (TOML or JSON)
BUDGET_FILE_SUFFIXES = (".toml", ".json")
#: how the id of a budget read from a file starts
FILE_PREFIX = "file:"
#: environment variable (+ hash) holding the canonical JSON of a budget read from a file
_FILE_ID = re.compile(r"file:(?P<name>[A-Za-z0-9_.-]+)@(?P<hash>[0-9a-f]{12})")
#: budgets read from files in this process, by id
_FILE_BUDGETS: dict[str, Budget] = {}


class _Bad(Exception):
    """A value that does not fit its key (``args[0]`` says what is allowed)."""


#: a budget file larger than this is refused unread
MAX_FILE_BYTES = 64 * 1024
#: bounds that keep a budget something a machine can plan (a 3,000 x 3,000 grid drove the
#: planner to 8.7 GiB; a 10**6 px image size to a numpy "7.28 TiB" traceback)
MAX_GRID = 64
MAX_TRIALS = 256
MAX_SEEDS = 1000
MAX_INT = 2**31 - 1
#: the smallest learning rate: below it a float is subnormal and flushed to 0 in the run
MIN_LR = 1e-12


def _integer(low: int | None, high: int = MAX_INT) -> Callable[[Any], int]:
    low_text = f" >= {low}" if low is not None else f" >= {-MAX_INT}"
    allowed = f"an integer{low_text} and <= {high}"

    def conv(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Bad(allowed)
        if (low is not None and value < low) or not -MAX_INT <= value <= high:
            raise _Bad(allowed)
        return value

    return conv


def _number(low: float, strict: bool, high: float = math.inf) -> Callable[[Any], float]:
    allowed = f"a number {'>' if strict else '>='} {low:g}" + (
        f" and <= {high:g}" if math.isfinite(high) else ""
    )

    def conv(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Bad(allowed)
        if not math.isfinite(value) or value < low or (strict and value == low) or value > high:
            raise _Bad(allowed)
        return float(value)

    return conv


def _distinct_list(
    item: Callable[[Any], Any], what: str, most: int = MAX_GRID
) -> Callable[[Any], tuple[Any, ...]]:
    allowed = f"a non-empty list of at most {most} distinct {what}"

    def conv(value: Any) -> tuple[Any, ...]:
        if not isinstance(value, list) or not value or len(value) > most:
            raise _Bad(allowed)
        try:
            out = tuple(item(v) for v in value)
        except _Bad:
            raise _Bad(allowed) from None
        if len(set(out)) < len(out):
            raise _Bad(allowed)
        return out

    return conv


def _choice(*options: str) -> Callable[[Any], str]:
    allowed = "one of " + ", ".join(repr(o) for o in options)

    def conv(value: Any) -> str:
        if value not in options or not isinstance(value, str):
            raise _Bad(allowed)
        return value

    return conv


def _text(nonempty: bool) -> Callable[[Any], str]:
    allowed = "a non-empty string" if nonempty else "a string"

    def conv(value: Any) -> str:
        if not isinstance(value, str) or (nonempty and not value.strip()):
            raise _Bad(allowed)
        return value

    return conv


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Bad("true or false")
    return value


def _optional(conv: Callable[[Any], Any], absent: str) -> Callable[[Any], Any]:
    def wrapped(value: Any) -> Any:
        if value is None:
            return None
        try:
            return conv(value)
        except _Bad as bad:
            raise _Bad(f"{bad.args[0]} ({absent})") from None

    return wrapped


#: what each key of a budget file may hold (converter; its ``_Bad`` says what is allowed)
_RULES: dict[str, Callable[[Any], Any]] = {
    "epochs": _integer(1, 100_000),
    "warmup_epochs": _integer(0, 100_000),
    "batch_size": _integer(1, 65_536),
    "optimizer": _choice("adamw", "sgd"),
    "lr_grid": _distinct_list(_number(MIN_LR, strict=False, high=1e6), f"numbers >= {MIN_LR:g}"),
    "wd_grid": _distinct_list(_number(0, strict=False, high=1e6), "numbers >= 0"),
    "image_size": _integer(1, 4096),
    "seeds": _distinct_list(_integer(None), f"integers within +-{MAX_INT}", MAX_SEEDS),
    "search_seed": _integer(None),
    "search_replicates": _integer(1, 32),
    "selection": _choice("max", "smoothed"),
    "precision_target": _optional(
        _number(0, strict=True, high=100), "leave the key out for a budget without a target"
    ),
    "backbone": _text(nonempty=True),
    "precision": _choice("auto", "fp32"),
    "grad_clip": _optional(_number(0, strict=True), "leave the key out for no clipping"),
    "subset": _optional(_integer(1), "leave the key out for every example"),
    "timeout_s": _number(0, strict=True),
    "description": _text(nonempty=False),
    "purpose": _text(nonempty=False),
    "skip_bad": _boolean,
    "weights": _optional(
        _choice("random"), "leave the key out for the backbone's pretrained weights"
    ),
}
_VIDEO_RULES: dict[str, Callable[[Any], Any]] = {
    "num_frames": _integer(1),
    "sampling_rate": _integer(1),
    "short_side": _integer(1),
    "crop_size": _integer(1),
    "test_segments": _integer(1),
    "test_crops": _integer(1),
    "flip": _boolean,
}
#: keys a budget file must have (the fields of :class:`Budget` without a default, except ``id``)
REQUIRED_KEYS = tuple(f.name for f in fields(Budget) if f.name != "id" and f.default is MISSING)
#: every key a budget file may have
ALLOWED_KEYS = tuple(f.name for f in fields(Budget) if f.name != "id")


def _unknown(key: str, allowed: tuple[str, ...], where: str) -> str:
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    hint = f" (did you mean {where + close[0]!r}?)" if close else ""
    return f"unknown key {where + key!r}{hint}; allowed: {', '.join(where + k for k in allowed)}"


def _video(value: Any) -> VideoProtocol:
    allowed = tuple(_VIDEO_RULES)
    if not isinstance(value, dict):
        raise _Bad(f"a table of clip settings ({', '.join(allowed)})")
    out = {}
    for key, item in value.items():
        if key not in _VIDEO_RULES:
            raise BudgetError(_unknown(key, allowed, "video."))
        try:
            out[key] = _VIDEO_RULES[key](item)
        except _Bad as bad:
            raise BudgetError(f"key 'video.{key}' must be {bad.args[0]}, got {item!r}") from None
    try:
        return VideoProtocol(**out)
    except ValueError as err:
        raise BudgetError(f"key 'video': {err}") from None


def budget_from_dict(data: Any, budget_id: str) -> Budget:
    """Check the keys and values of a parsed budget file and build its :class:`Budget`.

    Args:
        data: the parsed file (a TOML table or a JSON object).
        budget_id: the id the budget gets.

    Raises:
        BudgetError: one line naming the first bad key and what it may hold (the caller adds
            which file).
    """
    if not isinstance(data, dict):
        raise BudgetError(f"expected a table of budget keys, got {type(data).__name__}")
    if "id" in data:
        raise BudgetError(
            "key 'id' is not allowed: a budget file's id is derived from its content "
            "(file:<file name>@<content hash>)"
        )
    for key in data:
        if key not in ALLOWED_KEYS:
            raise BudgetError(_unknown(key, ALLOWED_KEYS, ""))
    if missing := [k for k in REQUIRED_KEYS if k not in data]:
        raise BudgetError(
            f"missing key {missing[0]!r}; required: {', '.join(REQUIRED_KEYS)}"
            f" (optional: {', '.join(k for k in ALLOWED_KEYS if k not in REQUIRED_KEYS)})"
        )
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key == "video":
            values[key] = None if value is None else _video(value)
            continue
        try:
            values[key] = _RULES[key](value)
        except _Bad as bad:
            raise BudgetError(f"key {key!r} must be {bad.args[0]}, got {value!r}") from None
    trials = len(values.get("lr_grid", ())) * len(values.get("wd_grid", ()))
    if trials > MAX_TRIALS:
        raise BudgetError(
            f"lr_grid x wd_grid has {trials} trials; a budget may have at most {MAX_TRIALS}"
        )
    if values["warmup_epochs"] > values["epochs"]:
        raise BudgetError(
            f"key 'warmup_epochs' must be at most epochs ({values['epochs']}), "
            f"got {values['warmup_epochs']}"
        )
    if values.get("skip_bad") and values.get("video") is None:
        raise BudgetError("key 'skip_bad' applies to video budgets only (add a [video] table)")
    return Budget(id=budget_id, **values)


#: fields added after budget files existed, with the default that leaves an older file's id as
#: it was (a field at this value is not part of the hashed text)
LATER_FIELDS = {"search_replicates": 1, "selection": "max", "precision_target": None}


def file_values(budget: Budget) -> dict[str, Any]:
    """The keys a budget file of ``budget``'s values holds (lists for tuples, no ``id``).

    Reading them back (:func:`budget_from_dict`) checks a budget by the rules a file is checked
    by: the built-in budgets are checked so at import (:mod:`pebench.budget`).
    """
    data = budget.as_dict()
    del data["id"]
    return {
        k: list(v) if isinstance(v, tuple) else v
        for k, v in data.items()
        if v is not None or k not in _OPTIONAL_KEYS
    }


#: keys whose absence means ``None`` (the fields of :class:`Budget` that default to it)
_OPTIONAL_KEYS = tuple(f.name for f in fields(Budget) if f.default is None)


def check_values(budget: Budget) -> None:
    """Check a budget's values by the rules of a budget file (one line naming the key).

    Raises:
        BudgetError: ``budget ID: key ... must be ...``.
    """
    try:
        again = budget_from_dict(file_values(budget), budget.id)
    except BudgetError as err:
        raise BudgetError(f"budget {budget.id}: {err}") from None
    if again != budget:
        raise BudgetError(f"budget {budget.id}: its values do not read back as themselves")


def canonical_json(budget: Budget) -> str:
    """Every field but ``id``, as compact JSON with sorted keys: what a budget file's id hashes.

    A field of :data:`LATER_FIELDS` at its default is left out, so adding a field never changes
    the id (and the rows) of a budget file written before it.
    """
    data = budget.as_dict()
    del data["id"]
    for key, default in LATER_FIELDS.items():
        if data.get(key) == default:
            del data[key]
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)


def content_hash(budget: Budget) -> str:
    """First 12 hex digits of the SHA-256 of :func:`canonical_json`."""
    return hashlib.sha256(canonical_json(budget).encode("utf-8")).hexdigest()[:12]


def _remember(budget: Budget) -> None:
    """Make a file budget's id resolvable in this process (runs carry the budget itself)."""
    _FILE_BUDGETS[budget.id] = budget


def _parse(path: Path) -> Any:
    suffix = path.suffix.lower()
    if suffix not in BUDGET_FILE_SUFFIXES:
        raise BudgetError(
            f"unknown format {path.suffix or '(no suffix)'!r}; allowed: "
            f"{', '.join(BUDGET_FILE_SUFFIXES)}"
        )
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):  # a FIFO would hang the reader, /dev/zero fill memory
            raise BudgetError("not a regular file")
        if info.st_size > MAX_FILE_BYTES:
            raise BudgetError(f"{info.st_size} bytes; a budget file may have {MAX_FILE_BYTES}")
        with open(path, "rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise BudgetError("not found") from None
    except OSError as err:
        raise BudgetError(f"unreadable ({err.strerror or err})") from None
    if len(raw) > MAX_FILE_BYTES:
        raise BudgetError(f"more than the {MAX_FILE_BYTES} bytes a budget file may have")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BudgetError("not UTF-8 text") from None
    if suffix == ".json":
        try:
            return json.loads(text)
        except ValueError as err:
            raise BudgetError(f"not valid JSON: {err}") from None
        except RecursionError:
            raise BudgetError("not valid JSON: nested too deeply") from None
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise BudgetError(
                "TOML needs Python >= 3.11 or the tomli package; write the budget as JSON"
            ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise BudgetError(f"not valid TOML: {err}") from None
    except RecursionError:
        raise BudgetError("not valid TOML: nested too deeply") from None


def load_budget_file(path: str | Path) -> Budget:
    """Read a budget file (TOML or JSON) whose keys are the fields of :class:`Budget`.

    Every key of :data:`REQUIRED_KEYS` must be given; the others take :class:`Budget`'s
    defaults; ``id`` is not allowed. The budget's id is
    ``file:<file name>@<content hash>`` (:func:`content_hash`), so the same values give the same
    id (a rerun resumes) whatever the whitespace, comments, key order or number spelling.

    Args:
        path: the budget file (``.toml`` or ``.json``).

    Returns:
        The budget, also remembered under its id (see :func:`_stored_budget`).

    Raises:
        BudgetError: ``budget file PATH: ...``, naming the bad key and what it may hold.
    """
    path = Path(path)
    try:
        probe = budget_from_dict(_parse(path), "")
    except BudgetError as err:
        raise BudgetError(f"budget file {path}: {err}") from None
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", path.stem).strip("-") or "budget"
    budget = replace(probe, id=f"{FILE_PREFIX}{name}@{content_hash(probe)}")
    _remember(budget)
    return budget


def _stored_budget(budget_id: str) -> Budget:
    """The budget of a ``file:<name>@<hash>`` id read earlier in this process.

    Runs never need it: a run carries its budget's values (:class:`pebench.run.RunSpec`). A new
    process (``pebench status``, a rerun) names the file again.
    """
    if budget_id in _FILE_BUDGETS:
        return _FILE_BUDGETS[budget_id]
    if _FILE_ID.fullmatch(budget_id) is None:
        raise RegistryError(
            f"budget id {budget_id!r} is not of the form file:<name>@<12 hex digits>; pass "
            "--budget PATH of the budget file"
        )
    raise RegistryError(
        f"budget {budget_id!r} names the values of a budget file, not the file; pass --budget "
        "PATH of that file"
    )


def _looks_like_path(text: str) -> bool:
    return (
        text.lower().endswith(BUDGET_FILE_SUFFIXES)
        or os.sep in text
        or "/" in text
        or Path(text).is_file()
    )
