"""The peft bridge's build probe: can a peft tuner type adapt a timm ViT at all?

:func:`pebench.methods.peft_bridge.available_peft_types` lists only the peft types whose default
configuration passes this miniature conformance run on ``tiny_vit("cls")``.
"""

from __future__ import annotations

import torch

from pebench.method import Method, prepare


class Unfit(Exception):
    """The peft type cannot adapt a timm ViT; the message says why."""


def _tiny_vit() -> torch.nn.Module:
    """The ``pebench_vit_test_cls`` architecture, built from timm (no backbone-factory import)."""
    from pebench.vit import timm

    arch = timm.models.vision_transformer.VisionTransformer
    return arch(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, num_classes=0)


def fit_on_tiny_vit(method_cls: type[Method]) -> bool:
    """A miniature conformance run of ``method_cls`` (default config) on a tiny ViT.

    Returns:
        Whether the method is the identity at init.

    Raises:
        Unfit: it adds nothing trainable, rewrites backbone weights, leaves parameters without
            gradient, or mixes samples of a batch.
    """
    torch.manual_seed(0)
    model, x = _tiny_vit().eval(), torch.randn(3, 3, 32, 32)
    mates = torch.cat([x[:1], torch.randn(2, 3, 32, 32)])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        ref = model.forward_features(x)
    method = method_cls.build()
    prepare(model, method, 2)
    names = method.trainable(model)
    if not names:
        raise Unfit("it adds no trainable parameters to the block Linear layers")
    state = model.state_dict()
    if any(not torch.equal(state[method.backbone_key(k, model)], v) for k, v in before.items()):
        raise Unfit("it rewrites the frozen backbone weights when attached")
    with torch.no_grad():
        out = model.forward_features(x)
    params = {n: p for n, p in model.named_parameters() if n in names}
    opt, reached = torch.optim.Adam(params.values(), lr=1e-2), set()
    model.train()
    for _ in range(3):
        opt.zero_grad()
        model.forward_features(x).square().mean().backward()
        reached |= {n for n, p in params.items() if p.grad is not None and p.grad.any()}
        opt.step()
    if dead := sorted(set(params) - reached):
        raise Unfit(f"no gradient ever reaches {dead[:2]} in the default configuration")
    model.eval()
    with torch.no_grad():
        if not torch.allclose(model(x)[0], model(mates)[0], atol=1e-5):
            raise Unfit("a sample's output depends on its batch-mates")
    return bool((out - ref).abs().max() < 1e-5)
