"""A method exercised the ways a run uses it, on tiny random timm ViTs: what the checks run.

This module *is* the conformance suite (:mod:`pebench.conformance` is its public face, for
``pebench check`` and the tests). Each check is a plain function ``check(method_cls) -> None``
that raises ``AssertionError`` with a reason; :data:`CHECKS` names them. Every check runs on three
tiny backbones (:data:`KINDS`): a cls-token ViT, an average-pooling ViT without cls token, and a
video ViT in the VideoMAE layout (``pebench_video_test``: clips of 4 frames, tubelets of 2, 32
space-time tokens, no cls token, mean pooling + ``fc_norm``). Inputs come from
:func:`pebench.backbones.videomae.example_input`, so each backbone gets its own input shape.

**Why the neutral name.** ``pebench run`` gates every method on these checks in a fresh process
(:func:`stage`, started by :mod:`pebench.sweep.gate` as a run's stages are started), and a
plugin's code runs inside that process. A plugin that behaved honestly only while it saw the checks
(``pebench.conformance`` on the stack or in ``sys.modules``, a function called ``check_*``) passed
and cheated in its runs. So nothing the gate's process executes is named after checking: this
module and its functions are named for what they do to the method (exercise it: build, train a
step, evaluate, merge, save and reload), and the gate's process never imports
:mod:`pebench.conformance`. The gate also exercises the sweep's actual method config (preset and
``--set`` values) at the evaluation batch sizes its runs use, and draws every size, class count,
weight and input from a seed taken from OS entropy per gate (:class:`Setting`), so no fixed input
or batch size marks the checks either.

**What cannot be hidden** from a plugin that reads pebench's source (it is trusted code: what
protects the numbers from a dishonest one is the structure, the evaluation of the saved state in
a fresh process, not these checks): the frames of this module (its name, file and function names,
their locals) are on the stack instead of a run's harness and training loop, and the module is in
``sys.modules``; the model is one of the tiny test ViTs (a run's backbone may be larger); the
checks' data is random noise and the process writes no row. A plugin can therefore recognise the
checks by looking for what is *absent* (a run's frames, its data), never by a name that only a
check carries.
"""

from __future__ import annotations

import contextvars
import copy
import json
import os
import random
import signal
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import lru_cache
from multiprocessing.connection import Connection
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from pebench.backbones import tiny_vit
from pebench.backbones.videomae import example_input, tiny_video
from pebench.method import (
    Method,
    load_tunable_state_dict,
    prepare,
    tunable_state_dict,
)
from pebench.vit import NotAViTError, PetlBlock, PetlLinear, PetlModule, vit_dims

#: test backbones: image ViT with cls token, image ViT with average pooling, video ViT
KINDS = ("cls", "gap", "video")
#: classes of the head without a seed (``pebench check``, the tests)
NUM_CLASSES = 5
#: the evaluation batch without a sweep's (the training batch of the demo budgets): large enough
#: that a method adapting to the statistics of its evaluation batch (test-time adaptation on
#: batches of >= 16) is seen doing it
INDEPENDENCE_BATCH = 32


@dataclass
class CheckResult:
    """Outcome of one check."""

    name: str
    passed: bool
    detail: str = ""


@dataclass(frozen=True)
class Setting:
    """How a method is exercised: the config its runs use and where every random draw comes from.

    Attributes:
        preset: the method preset (``None``: ``"default"``).
        overrides: ``--set`` values as sorted ``(key, value)`` pairs.
        eval_batch: the largest evaluation batch the method's runs use: the independence check
            evaluates a batch of exactly this size, one smaller and one larger.
        seed: the source of every size, class count, backbone weight and input; ``None`` gives the
            fixed values ``pebench check`` and the tests use (so their messages are stable).
    """

    preset: str | None = None
    overrides: tuple[tuple[str, Any], ...] = ()
    eval_batch: int = INDEPENDENCE_BATCH
    seed: int | None = None

    def build(self, method_cls: type[Method]) -> Method:
        """``method_cls`` built with this setting's preset and overrides."""
        return method_cls.build(self.preset, dict(self.overrides) or None)


@dataclass(frozen=True)
class Draws:
    """What a :class:`Setting` draws (the fixed values without a seed)."""

    backbone_seed: int = 1234
    prepare_seed: int = 99
    input_seed: int = 0
    num_classes: int = NUM_CLASSES
    batch: int = 4
    train_batch: int = 6
    token_img: int = 48
    shared: int = 8
    eval_sizes: tuple[int, ...] = (INDEPENDENCE_BATCH, 2 * INDEPENDENCE_BATCH)
    filler_scale: float = 3.0


@lru_cache(maxsize=8)
def draws(setting: Setting) -> Draws:
    """The random values of ``setting`` (:class:`Draws`' defaults when it has no seed).

    The evaluation sizes always include ``setting.eval_batch`` (the largest a run uses), a random
    smaller one and a random one above ``max(eval_batch, 32)``: a method must not depend on its
    batch-mates at any size, so one that does only on large batches is seen doing it.
    """
    if setting.seed is None:
        base = max(setting.eval_batch, 2)
        return Draws(eval_sizes=tuple(sorted({base, 2 * max(base, INDEPENDENCE_BATCH)})))
    rng = random.Random(setting.seed)
    shared = rng.randint(1, 8)
    upper = max(setting.eval_batch, INDEPENDENCE_BATCH)
    sizes = {setting.eval_batch, rng.randint(2, upper), rng.randint(upper + 1, 2 * upper)}
    return Draws(
        backbone_seed=rng.randrange(2**31),
        prepare_seed=rng.randrange(2**31),
        input_seed=rng.randrange(2**31),
        num_classes=rng.randint(2, 20),
        batch=rng.randint(2, 8),
        train_batch=rng.randint(2, 12),
        token_img=rng.choice((40, 48, 56, 64)),
        shared=shared,
        eval_sizes=tuple(sorted(max(s, shared + 1) for s in sizes)),
        filler_scale=rng.uniform(0.5, 4.0),
    )


_SETTING: contextvars.ContextVar[Setting | None] = contextvars.ContextVar("setting", default=None)


def current() -> tuple[Setting, Draws]:
    """The setting the checks run under (see :func:`exercise`) and its draws."""
    setting = _SETTING.get() or Setting()
    return setting, draws(setting)


# ---------------------------------------------------------------------------------- helpers --
@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.random.set_rng_state(state)


def plain_backbone(kind: str, img_size: int = 32) -> nn.Module:
    """The same random tiny ViT (``kind`` in :data:`KINDS`) every time (seeded), without head."""
    with _seeded(current()[1].backbone_seed):
        model = (
            tiny_video(img_size=img_size) if kind == "video" else tiny_vit(kind, img_size=img_size)
        )
    return model.eval()


def prepared(
    method_cls: type[Method], kind: str, img_size: int = 32, **overrides: object
) -> tuple[nn.Module, Method]:
    """A tiny backbone with ``method_cls`` (the setting's config) prepared on it, in eval mode."""
    setting, drawn = current()
    model = plain_backbone(kind, img_size)
    if overrides:
        method = method_cls.build(setting.preset, dict(setting.overrides) | overrides)
    else:
        method = setting.build(method_cls)
    with _seeded(drawn.prepare_seed):
        prepare(model, method, drawn.num_classes)
    return model.eval(), method


def images(n: int = 4, img_size: int = 32, seed: int = 0) -> torch.Tensor:
    """Deterministic random images."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, img_size, img_size, generator=g)


def inputs(model: nn.Module, n: int | None = None, seed: int = 0) -> torch.Tensor:
    """Random inputs shaped for ``model`` (images or clips), ``n`` of them (the setting's batch).

    Deterministic per ``seed`` and setting: the same call gives the same tensor.
    """
    drawn = current()[1]
    g = torch.Generator().manual_seed(drawn.input_seed + seed)
    return example_input(model, drawn.batch if n is None else n, generator=g)


@torch.no_grad()
def perturb_trainable(model: nn.Module, scale: float = 0.05, seed: int = 7) -> None:
    """Add noise to every trainable tensor so zero-init parts are no longer zero."""
    g = torch.Generator().manual_seed(seed + current()[1].input_seed)
    for _, p in sorted(model.named_parameters()):
        if p.requires_grad:
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


def _backbone_shapes(kind: str) -> dict[str, torch.Size]:
    return {k: v.shape for k, v in plain_backbone(kind).state_dict().items()}


# ----------------------------------------------------------------------------------- checks --
def registration(method_cls: type[Method]) -> None:
    """Name, metadata, config dataclass and every preset build."""
    base = method_cls.name.removeprefix("peft:")  # the peft bridge's names
    assert base and base.isidentifier(), f"bad name {method_cls.name!r}"
    assert method_cls.title, "title (paper title) is empty"
    assert isinstance(method_cls.Config, type), "Config must be a dataclass"
    params = method_cls.Config.__dataclass_params__  # type: ignore[attr-defined]
    assert params.frozen, "Config dataclass must be frozen"
    for preset in method_cls.preset_names():
        m = method_cls.build(preset)
        assert m.preset == preset
        m.config_json()
    assert method_cls.build().describe()["name"] == method_cls.name
    current()[0].build(method_cls).config_json()  # the config the runs use


def timm_api(method_cls: type[Method]) -> None:
    """forward_features / forward_head(pre_logits) / reset_classifier keep working; keys kept."""
    drawn = current()[1]
    n, classes = drawn.batch, drawn.num_classes
    for kind in KINDS:
        model, method = prepared(method_cls, kind)
        x = inputs(model)
        feats = model.forward_features(x)
        assert feats.ndim == 3 and feats.shape[0] == n, f"{kind}: features {tuple(feats.shape)}"
        pre = model.forward_head(feats, pre_logits=True)
        assert pre.shape == (n, model.embed_dim), f"{kind}: pre-logits {tuple(pre.shape)}"
        assert model(x).shape == (n, classes)
        shapes = model.state_dict()
        plain = plain_backbone(kind).state_dict()
        for key, value in plain.items():
            where = method.backbone_key(key, model)
            assert where in shapes, f"{kind}: backbone key {key!r} renamed or removed by attach"
            assert torch.equal(shapes[where], value), f"{kind}: attach changed {key}"
        model.reset_classifier(3)
        assert model(x).shape == (n, 3)


def trainable_set(method_cls: type[Method]) -> None:
    """Exact trainable set: no dead new params, no stray backbone params."""
    for kind in KINDS:
        model, method = prepared(method_cls, kind)
        backbone = {method.backbone_key(k, model) for k in _backbone_shapes(kind)}
        head = {f"head.{n}" for n, _ in model.head.named_parameters()}
        params = dict(model.named_parameters())
        trainable = {n for n, p in params.items() if p.requires_grad} - head
        declared = method.trainable(model)
        assert trainable == declared, (
            f"{kind}: the parameters with requires_grad (measured) differ from trainable() "
            f"(declared): only measured {sorted(trainable - declared)[:4]}, only declared "
            f"{sorted(declared - trainable)[:4]}"
        )
        new = set(params) - backbone - head
        assert new <= trainable, f"{kind}: new parameters not trained: {sorted(new - trainable)}"
        stray = trainable & backbone
        if method_cls.caps.unfreezes_backbone:
            assert stray or not backbone, f"{kind}: caps.unfreezes_backbone but no backbone param"
        else:
            assert not stray, f"{kind}: trains backbone params {sorted(stray)[:4]}"
        assert all(p.requires_grad for n, p in params.items() if n in head), "head frozen"


def param_count(method_cls: type[Method]) -> None:
    """The instantiated count equals the closed form, on every backbone and two token counts."""
    setting, drawn = current()
    for kind in KINDS:
        for img in (32, drawn.token_img):
            dims = vit_dims(plain_backbone(kind, img))
            model = plain_backbone(kind, img)
            method = setting.build(method_cls)
            count = prepare(model, method, drawn.num_classes)
            expected = method.expected_num_params(dims)
            assert count.method == expected, (
                f"{kind}@{img}px: measured {count.method} trainable parameters (the prepared "
                f"model's trainable() set), declared {expected} (expected_num_params)"
            )
            head = (model.embed_dim + 1) * drawn.num_classes
            assert count.head == head, (
                f"{kind}@{img}px: measured {count.head} head parameters, expected {head} "
                "(the core's head: never the method's)"
            )
            backbone = sum(v.numel() for v in plain_backbone(kind, img).parameters())
            assert count.backbone == backbone, (
                f"{kind}@{img}px: measured {count.backbone} backbone parameters after attach, "
                f"the plain backbone has {backbone} (attach must keep every backbone tensor)"
            )


def identity_at_init(method_cls: type[Method]) -> None:
    """Pre-logits equal the plain backbone's right after attach (only where claimed)."""
    if not method_cls.caps.identity_at_init:
        return
    for kind in KINDS:
        plain = plain_backbone(kind)
        model, _ = prepared(method_cls, kind)
        x = inputs(model)
        with torch.no_grad():
            ref = plain.forward_head(plain.forward_features(x), pre_logits=True)
            out = model.forward_head(model.forward_features(x), pre_logits=True)
        err = (ref - out).abs().max().item()
        assert err < 1e-5, f"{kind}: not identity at init (max abs diff {err:.2e})"


def training_step(method_cls: type[Method]) -> None:
    """Only trainable params change after a few steps (no buffer); all get gradients; no NaN."""
    drawn = current()[1]
    for kind in KINDS:
        model, _ = prepared(method_cls, kind)
        model.train()
        before = {k: v.detach().clone() for k, v in model.named_parameters()}
        buffers = {k: v.detach().clone() for k, v in model.named_buffers()}
        trainable = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(trainable, lr=1e-2, weight_decay=0.0)
        got_grad = {n: False for n, p in model.named_parameters() if p.requires_grad}
        g = torch.Generator().manual_seed(3 + drawn.input_seed)
        for step in range(3):
            x = example_input(model, drawn.train_batch, generator=g)
            y = torch.randint(0, drawn.num_classes, (drawn.train_batch,), generator=g)
            loss = F.cross_entropy(model(x), y)
            assert torch.isfinite(loss), f"{kind}: loss not finite at step {step}"
            opt.zero_grad(set_to_none=True)
            loss.backward()
            for n, p in model.named_parameters():
                if p.grad is not None and p.grad.abs().sum() > 0:
                    got_grad[n] = True
            opt.step()
        dead = [n for n, ok in got_grad.items() if not ok]
        assert not dead, f"{kind}: no gradient ever reached {dead[:4]}"
        for n, p in model.named_parameters():
            assert torch.isfinite(p).all(), f"{kind}: {n} has NaN/inf"
            changed = not torch.equal(p.detach(), before[n])
            assert changed == p.requires_grad, (
                f"{kind}: {n} changed={changed}, trainable={p.requires_grad}"
            )
        learned = [n for n, b in model.named_buffers() if not torch.equal(b, buffers[n])]
        assert not learned, (
            f"{kind}: buffers changed during training: {learned[:4]} (state learned outside "
            "the parameters, which no parameter count sees)"
        )


def merge(method_cls: type[Method]) -> None:
    """Merged logits equal unmerged after perturbation; merged model is a plain ViT."""
    if not method_cls.caps.mergeable:
        return
    for kind in KINDS:
        model, method = prepared(method_cls, kind)
        perturb_trainable(model)
        if not method.mergeable_on(model):  # refused on this backbone: clearly, changing nothing
            before = copy.deepcopy(model.state_dict())
            try:
                method.merge(model)
            except (ValueError, NotImplementedError):
                pass
            else:
                raise AssertionError(f"{kind}: mergeable_on is False but merge() did not raise")
            same = all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
            assert same, f"{kind}: a refused merge changed the model"
            continue
        x = inputs(model)
        with torch.no_grad():
            ref = model(x)
            merged = method.merge(copy.deepcopy(model)).eval()
            out = merged(x)
        err = (ref - out).abs().max().item()
        tol = 1e-4 * max(1.0, ref.abs().max().item())
        assert err < tol, (
            f"{kind}: merge error {err:.2e} (max abs difference of the merged model's logits "
            f"from the unmerged model's; tolerance {tol:.1e})"
        )
        expect = _backbone_shapes(kind)
        expect.update({f"head.{n}": p.shape for n, p in merged.head.named_parameters()})
        got = {k: v.shape for k, v in merged.state_dict().items()}
        assert got == expect, f"{kind}: merged keys differ: {sorted(set(got) ^ set(expect))[:4]}"
        leftovers = [
            n
            for n, m in merged.named_modules()
            if isinstance(m, PetlModule | PetlBlock | PetlLinear)
        ]
        assert not leftovers, f"{kind}: merged model still has pebench modules {leftovers[:3]}"


def state_dict_roundtrip(method_cls: type[Method]) -> None:
    """Tunable-only state dict loads into a fresh prepared backbone and reproduces outputs."""
    for kind in KINDS:
        model, _ = prepared(method_cls, kind)
        perturb_trainable(model)
        state = tunable_state_dict(model)
        fresh, _ = prepared(method_cls, kind)
        load_tunable_state_dict(fresh, state)
        x = inputs(model)
        with torch.no_grad():
            assert torch.equal(model(x), fresh(x)), f"{kind}: round trip changed outputs"


def dropout_modes(method_cls: type[Method]) -> None:
    """Eval is deterministic; dropout inside the method is active in train mode."""
    for kind in KINDS:
        model, _ = prepared(method_cls, kind)
        perturb_trainable(model, scale=0.5)
        x = inputs(model)
        with torch.no_grad():
            assert torch.equal(model(x), model(x)), f"{kind}: eval mode not deterministic"
            drops = [
                m
                for pm in model.modules()
                if isinstance(pm, PetlModule)
                for m in pm.modules()
                if isinstance(m, nn.Dropout) and m.p > 0
            ]
            if drops:
                model.train()
                a, b = model(x), model(x)
                model.eval()
                assert not torch.equal(a, b), f"{kind}: method dropout inactive in train mode"


def non_vit_fails(method_cls: type[Method]) -> None:
    """Attaching to something that is not a timm ViT fails loudly."""
    setting = current()[0]
    not_vit = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.LazyLinear(4))
    for fn in (
        lambda: setting.build(method_cls).attach(not_vit),
        lambda: prepare(not_vit, setting.build(method_cls), 3),
    ):
        try:
            fn()
        except (NotAViTError, TypeError):
            continue
        raise AssertionError("attaching to a non-ViT did not raise NotAViTError/TypeError")


def _placed(shared: torch.Tensor, filler: torch.Tensor, seed: int) -> tuple[torch.Tensor, list]:
    """``shared`` and ``filler`` in one batch, ``shared`` at random positions (returned)."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(shared) + len(filler), generator=g).tolist()
    where = order[: len(shared)]
    batch = torch.empty((len(order), *shared.shape[1:]), dtype=shared.dtype)
    batch[where] = shared
    batch[order[len(shared) :]] = filler
    return batch, where


def per_sample_independence(method_cls: type[Method]) -> None:
    """Outputs do not depend on batch-mates (eval mode), at every evaluation batch size.

    A few shared samples are evaluated alone, together, and placed among other samples in a
    batch of each size of the setting (the runs' largest evaluation batch, a smaller and a larger
    one): every shared sample must get the same output everywhere.
    """
    drawn = current()[1]
    for kind in KINDS:
        model, _ = prepared(method_cls, kind)
        perturb_trainable(model)
        shared = inputs(model, drawn.shared, seed=1)
        with torch.no_grad():
            ref, alone = model(shared), model(shared[:1])
            tol = 1e-5 * max(1.0, ref.abs().max().item())
            for i, size in enumerate(drawn.eval_sizes):
                filler = inputs(model, size - len(shared), seed=11 + i) * drawn.filler_scale
                batch, where = _placed(shared, filler, drawn.input_seed + i)
                err = (model(batch)[where] - ref).abs().max().item()
                assert err < tol, (
                    f"{kind}: outputs depend on batch-mates (an evaluation batch of {size}: max "
                    f"abs diff {err:.2e} from the same samples in a batch of {len(shared)})"
                )
        err = (ref[:1] - alone).abs().max().item()
        assert err < tol, f"{kind}: a sample alone differs from in a batch ({err:.2e})"


def token_counts(method_cls: type[Method]) -> None:
    """Attach and run at a second token count (48 px: 36 patches per frame instead of 16)."""
    drawn = current()[1]
    for kind in KINDS:
        model, _ = prepared(method_cls, kind, img_size=drawn.token_img)
        assert model(inputs(model, 2)).shape == (2, drawn.num_classes)


def measurable(method_cls: type[Method]) -> None:
    """FLOPs are countable and the trainable set survives counting (the runner measures both)."""
    from pebench.metrics import flops_per_image

    for kind in KINDS:
        plain = plain_backbone(kind)
        model, _ = prepared(method_cls, kind)
        before = {n for n, p in model.named_parameters() if p.requires_grad}
        flops = flops_per_image(model, 32, torch.device("cpu"))
        assert flops >= flops_per_image(plain, 32, torch.device("cpu")) > 0, f"{kind}: {flops}"
        after = {n for n, p in model.named_parameters() if p.requires_grad}
        assert before == after, f"{kind}: counting FLOPs changed the trainable set"


CHECKS: dict[str, Callable[[type[Method]], None]] = {
    "registration": registration,
    "timm_api": timm_api,
    "trainable_set": trainable_set,
    "param_count": param_count,
    "identity_at_init": identity_at_init,
    "training_step": training_step,
    "merge": merge,
    "state_dict_roundtrip": state_dict_roundtrip,
    "dropout_modes": dropout_modes,
    "non_vit_fails": non_vit_fails,
    "per_sample_independence": per_sample_independence,
    "token_counts": token_counts,
    "measurable": measurable,
}


def exercise(
    method: type[Method] | str, only: list[str] | None = None, setting: Setting | None = None
) -> list[CheckResult]:
    """Run :data:`CHECKS` (or ``only`` those) under ``setting``; never raises for a failure."""
    if isinstance(method, str):
        from pebench.methods import get_method_class

        method = get_method_class(method)
    token = _SETTING.set(setting or Setting())
    try:
        results = []
        for name, fn in CHECKS.items():
            if only and name not in only:
                continue
            try:
                fn(method)
                results.append(CheckResult(name, True))
            except Exception as err:  # report every failure, keep going
                detail = f"{type(err).__name__}: {err}"
                if not isinstance(err, AssertionError):
                    detail += "\n" + traceback.format_exc(limit=3)
                results.append(CheckResult(name, False, detail))
        return results
    finally:
        _SETTING.reset(token)


def _verdict(request: dict[str, Any]) -> dict[str, Any]:
    """The results of exercising the requested method, as JSON data (an error as ``error``)."""
    try:
        from pebench.methods import registry

        name = request["name"]
        if request.get("cls") is not None and name not in registry.names():
            registry.register(name, request["cls"], origin=request.get("origin", "runtime"))
        setting = request["setting"]
        setting = Setting(**(setting | {"overrides": tuple(map(tuple, setting["overrides"]))}))
        results = exercise(registry.get(name), request["only"], setting)
        return {"results": [asdict(r) for r in results]}
    except Exception as err:  # the method could not even be loaded: the verdict says so
        return {"error": f"{type(err).__name__}: {err}".splitlines()[0]}


def stage(chan: Any, request: dict[str, Any]) -> None:
    """The gate's process body, run as a run's stages are (:func:`pebench.stage.run_stage`).

    Sends one ``done`` message whose body is :func:`_verdict`'s (JSON, never a pickle).

    Args:
        chan: the stage's channel to the driver.
        request: ``name`` (registered method), ``cls`` (the class itself for a method registered
            at run time, else ``None``) and ``origin``, ``only`` (the checks), ``setting`` (the
            fields of a :class:`Setting`) and ``threads`` (the runs' torch threads).
    """
    if request.get("threads"):
        torch.set_num_threads(int(request["threads"]))
    chan.send("done", _verdict(request))


def serve(conn: Connection, env: dict[str, str], request: dict[str, Any]) -> None:
    """:func:`stage` set up by hand, where pebench has no run stages to start it as one.

    Sets the process up as a run's process does (SIGINT ignored, dies with its parent, the
    runs' environment) and sends the same ``done`` message on ``conn``.
    """
    from multiprocessing import parent_process
    from multiprocessing.connection import wait
    from threading import Thread

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if (parent := parent_process()) is not None:
        Thread(target=lambda: (wait([parent.sentinel]), os._exit(70)), daemon=True).start()
    os.environ.update(env)
    body = {"kind": "done", "body": None, "block": False}
    if request.get("threads"):
        torch.set_num_threads(int(request["threads"]))
    conn.send_bytes(json.dumps(body | {"body": _verdict(request)}, default=str).encode())
    conn.close()


__all__ = [
    "CHECKS",
    "INDEPENDENCE_BATCH",
    "KINDS",
    "NUM_CLASSES",
    "CheckResult",
    "Draws",
    "Setting",
    "current",
    "draws",
    "exercise",
    "images",
    "inputs",
    "perturb_trainable",
    "plain_backbone",
    "prepared",
    "serve",
    "stage",
]
