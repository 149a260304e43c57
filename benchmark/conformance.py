"""The conformance suite every registered method must pass (CPU, tiny timm ViTs).

Each check is a plain function ``check(method_cls) -> None`` that raises ``AssertionError`` with
a reason. ``tests/test_conformance.py`` parametrizes them by the registry (so a method is tested the
moment it registers, entry-point ones included); ``pebench check NAME`` runs them for one method.
Every check runs on three tiny backbones (:data:`KINDS`): a cls-token ViT, an average-pooling ViT
without cls token, and a video ViT in the VideoMAE layout (``pebench_video_test``: clips of 4
frames, tubelets of 2, 32 space-time tokens, no cls token, mean pooling + ``fc_norm``). Inputs
come from :func:`pebench.backbones.videomae.example_input`, so each backbone gets its own input
shape.
"""

from __future__ import annotations

import copy
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

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
NUM_CLASSES = 5


@dataclass
class CheckResult:
    """Outcome of one check."""

    name: str
    passed: bool
    detail: str = ""


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
    with _seeded(1234):
        model = (
            tiny_video(img_size=img_size) if kind == "video" else tiny_vit(kind, img_size=img_size)
        )
    return model.eval()


def prepared(
    method_cls: type[Method], kind: str, img_size: int = 32, **overrides: object
) -> tuple[nn.Module, Method]:
    """A tiny backbone with ``method_cls`` (default preset) prepared on it, in eval mode."""
    model = plain_backbone(kind, img_size)
    method = method_cls.build(overrides=overrides or None)
    with _seeded(99):
        prepare(model, method, NUM_CLASSES)
    return model.eval(), method


def images(n: int = 4, img_size: int = 32, seed: int = 0) -> torch.Tensor:
    """Deterministic random images."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, img_size, img_size, generator=g)


def inputs(model: nn.Module, n: int = 4, seed: int = 0) -> torch.Tensor:
    """Deterministic random inputs shaped for ``model`` (images or clips)."""
    return example_input(model, n, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def perturb_trainable(model: nn.Module, scale: float = 0.05, seed: int = 7) -> None:
    """Add noise to every trainable tensor so zero-init parts are no longer zero."""
    g = torch.Generator().manual_seed(seed)
    for _, p in sorted(model.named_parameters()):
        if p.requires_grad:
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


def _backbone_shapes(kind: str) -> dict[str, torch.Size]:
    return {k: v.shape for k, v in plain_backbone(kind).state_dict().items()}


# ----------------------------------------------------------------------------------- checks --
def check_registration(method_cls: type[Method]) -> None:
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


def check_timm_api(method_cls: type[Method]) -> None:
    """forward_features / forward_head(pre_logits) / reset_classifier keep working; keys kept."""
    for kind in KINDS:
        model, method = prepared(method_cls, kind)
        x = inputs(model)
        feats = model.forward_features(x)
        assert feats.ndim == 3 and feats.shape[0] == 4, f"{kind}: features {tuple(feats.shape)}"
        pre = model.forward_head(feats, pre_logits=True)
        assert pre.shape == (4, model.embed_dim), f"{kind}: pre-logits {tuple(pre.shape)}"
        assert model(x).shape == (4, NUM_CLASSES)
        shapes = model.state_dict()
        plain = plain_backbone(kind).state_dict()
        for key, value in plain.items():
            where = method.backbone_key(key, model)
            assert where in shapes, f"{kind}: backbone key {key!r} renamed or removed by attach"
            assert torch.equal(shapes[where], value), f"{kind}: attach changed {key}"
        model.reset_classifier(3)
        assert model(x).shape == (4, 3)


def check_trainable_set(method_cls: type[Method]) -> None:
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


def check_param_count(method_cls: type[Method]) -> None:
    """The instantiated count equals the closed form, on both backbones and two token counts."""
    for kind in KINDS:
        for img in (32, 48):
            dims = vit_dims(plain_backbone(kind, img))
            model = plain_backbone(kind, img)
            method = method_cls.build()
            count = prepare(model, method, NUM_CLASSES)
            expected = method.expected_num_params(dims)
            assert count.method == expected, (
                f"{kind}@{img}px: measured {count.method} trainable parameters (the prepared "
                f"model's trainable() set), declared {expected} (expected_num_params)"
            )
            head = (model.embed_dim + 1) * NUM_CLASSES
            assert count.head == head, (
                f"{kind}@{img}px: measured {count.head} head parameters, expected {head} "
                "(the core's head: never the method's)"
            )
            backbone = sum(v.numel() for v in plain_backbone(kind, img).parameters())
            assert count.backbone == backbone, (
                f"{kind}@{img}px: measured {count.backbone} backbone parameters after attach, "
                f"the plain backbone has {backbone} (attach must keep every backbone tensor)"
            )


def check_identity_at_init(method_cls: type[Method]) -> None:
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


def check_training_step(method_cls: type[Method]) -> None:
    """Only trainable params change after a few steps (no buffer); all get gradients; no NaN."""
    for kind in KINDS:
        model, _ = prepared(method_cls, kind)
        model.train()
        before = {k: v.detach().clone() for k, v in model.named_parameters()}
        buffers = {k: v.detach().clone() for k, v in model.named_buffers()}
        trainable = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(trainable, lr=1e-2, weight_decay=0.0)
        got_grad = {n: False for n, p in model.named_parameters() if p.requires_grad}
        g = torch.Generator().manual_seed(3)
        for step in range(3):
            x = example_input(model, 6, generator=g)
            y = torch.randint(0, NUM_CLASSES, (6,), generator=g)
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


def check_merge(method_cls: type[Method]) -> None:
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


def check_state_dict_roundtrip(method_cls: type[Method]) -> None:
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


def check_dropout_modes(method_cls: type[Method]) -> None:
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


def check_non_vit_fails(method_cls: type[Method]) -> None:
    """Attaching to something that is not a timm ViT fails loudly."""
    not_vit = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.LazyLinear(4))
    for fn in (
        lambda: method_cls.build().attach(not_vit),
        lambda: prepare(not_vit, method_cls.build(), 3),
    ):
        try:
            fn()
        except (NotAViTError, TypeError):
            continue
        raise AssertionError("attaching to a non-ViT did not raise NotAViTError/TypeError")


#: evaluation batch of the independence check: large enough that a method adapting to the
#: statistics of its evaluation batch (test-time adaptation on batches of >= 16) is seen doing it
INDEPENDENCE_BATCH = 32


def check_per_sample_independence(method_cls: type[Method]) -> None:
    """Outputs do not depend on batch-mates (eval mode): a batch of 32 in two compositions.

    The first half of the batch is the same in both compositions, the second half differs; every
    shared sample must get the same output (and the same as alone).
    """
    half = INDEPENDENCE_BATCH // 2
    for kind in KINDS:
        model, _ = prepared(method_cls, kind)
        perturb_trainable(model)
        shared = inputs(model, half)
        x = torch.cat([shared, inputs(model, half, seed=5)])
        y = torch.cat([shared, inputs(model, half, seed=9) * 3.0])
        with torch.no_grad():
            a, b, alone = model(x)[:half], model(y)[:half], model(shared[:1])
        err = (a - b).abs().max().item()
        assert err < 1e-5, f"{kind}: outputs depend on batch-mates (max abs diff {err:.2e})"
        err = (a[:1] - alone).abs().max().item()
        assert err < 1e-5, f"{kind}: a sample alone differs from in a batch ({err:.2e})"


def check_token_counts(method_cls: type[Method]) -> None:
    """Attach and run at a second token count (48 px: 36 patches per frame instead of 16)."""
    for kind in KINDS:
        model, _ = prepared(method_cls, kind, img_size=48)
        assert model(inputs(model, 2)).shape == (2, NUM_CLASSES)


def check_measurable(method_cls: type[Method]) -> None:
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
    "registration": check_registration,
    "timm_api": check_timm_api,
    "trainable_set": check_trainable_set,
    "param_count": check_param_count,
    "identity_at_init": check_identity_at_init,
    "training_step": check_training_step,
    "merge": check_merge,
    "state_dict_roundtrip": check_state_dict_roundtrip,
    "dropout_modes": check_dropout_modes,
    "non_vit_fails": check_non_vit_fails,
    "per_sample_independence": check_per_sample_independence,
    "token_counts": check_token_counts,
    "measurable": check_measurable,
}


def run_checks(method: type[Method] | str, only: list[str] | None = None) -> list[CheckResult]:
    """Run the suite for a method class or registered name; never raises for a failing check."""
    if isinstance(method, str):
        from pebench.methods import get_method_class

        method = get_method_class(method)
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
