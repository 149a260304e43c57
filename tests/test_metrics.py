"""FLOP counting against closed forms (attention included on every device)."""

import pytest
import torch

from pebench.backbones import create_backbone, tiny_vit
from pebench.method import prepare
from pebench.methods import build_method
from pebench.metrics import flops_per_image, step_flops


def _closed_form_forward(num_classes: int) -> tuple[int, int]:
    """(forward FLOPs, patch-embedding FLOPs) of tiny_vit("cls") at 32 px, one image."""
    d, depth, hidden, p, patches = 64, 2, 256, 8, 16
    n = patches + 1  # cls token
    conv = patches * 3 * p * p * d
    block = n * d * 3 * d + n * d * d + 2 * n * d * hidden + 2 * n * n * d  # + QK^T and AV
    return 2 * (conv + depth * block + d * num_classes), 2 * conv


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_forward_flops_match_the_closed_form_with_attention(device):
    with torch.device(device):
        model = tiny_vit("cls")
        prepare(model, build_method("linear", {}), 10)
    want, _ = _closed_form_forward(10)
    fwd, _ = step_flops(model, 32)
    assert fwd == want
    if device == "cpu":
        assert flops_per_image(model, 32, torch.device("cpu")) == want


def test_training_step_flops_follow_what_gets_gradients():
    fwd, conv = _closed_form_forward(10)
    d, c = 64, 10
    full = tiny_vit("cls")
    prepare(full, build_method("full", {}), c)
    f, step = step_flops(full, 32)
    # every matmul twice more (input and weight gradients) except the patch embedding, whose
    # input (the image) needs no gradient
    assert (f, step) == (fwd, 3 * fwd - conv)
    probe = tiny_vit("cls")
    prepare(probe, build_method("linear", {}), c)
    f, step = step_flops(probe, 32)
    assert step == fwd + 2 * d * c  # only the head's weight gradient


def test_vit_b16_counts_on_the_meta_device():
    with torch.device("meta"):
        model = create_backbone("vit_base_patch16_224", "random", image_size=224).model
        prepare(model, build_method("lora", {}), 100)
    fwd, step = step_flops(model, 224)
    assert 35.1e9 < fwd < 35.4e9  # ViT-B/16: 17.6 GMACs, attention included
    assert 1.9 < step / fwd < 2.2  # frozen backbone: input gradients only


def test_a_cpu_row_names_the_instruction_set_its_kernels_use():
    """CPU runs are bit-identical per kind of CPU only: the row must say which kind."""
    import torch

    from pebench.metrics import device_name

    name = device_name(torch.device("cpu"))
    isa = torch.backends.cpu.get_cpu_capability()
    assert name.startswith("cpu:") and f"/{isa}x" in name and name.endswith("threads")
