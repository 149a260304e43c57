"""``pebench pretrain``: the recipe of the embedded ``pebench_vit_micro.fractal_v1`` backbone.

Supervised pretraining of ``pebench_vit_micro`` on formula-driven fractal classes
(:mod:`pebench.datasets.fractals`), so that the offline demo measures real transfer. Deterministic
for a seed on CPU; the default recipe takes about 10-15 minutes on 2 CPU cores, and
``--epochs``/``--per-class`` scale it up on a GPU or down for tests.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from pebench.backbones import create_backbone, save_weights, sha256_file
from pebench.report import mdtable
from pebench.report.mdtable import Markdown
from pebench.train import lr_factor


@dataclass(frozen=True)
class Recipe:
    """Everything that defines the pretrained checkpoint (written into its model card)."""

    backbone: str = "pebench_vit_micro"
    num_classes: int = 200
    per_class: int = 100
    holdout_per_class: int = 10
    image_size: int = 32
    epochs: int = 20
    warmup_epochs: int = 1
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    shift: int = 3
    seed: int = 0


def _augment(x: torch.Tensor, shift: int, gen: torch.Generator) -> torch.Tensor:
    """Random translation by up to ``shift`` pixels (zero padding) and horizontal flip."""
    if shift:
        padded = F.pad(x, (shift, shift, shift, shift))
        dx, dy = torch.randint(0, 2 * shift + 1, (2,), generator=gen).tolist()
        x = padded[..., dy : dy + x.shape[-2], dx : dx + x.shape[-1]]
    if torch.rand((), generator=gen) < 0.5:
        x = x.flip(-1)
    return x


Pair = tuple[torch.Tensor, torch.Tensor]


def _fractal_splits(recipe: Recipe, mean: tuple, std: tuple) -> tuple[Pair, Pair]:
    """Normalised ``(train, held-out)`` fractal images and labels.

    The first ``holdout_per_class`` images of every class are held out for the source accuracy.
    """
    from pebench.datasets.fractals import dataset

    per = recipe.per_class + recipe.holdout_per_class
    images, labels = dataset(recipe.num_classes, per, recipe.image_size, recipe.seed)
    rank = np.zeros(len(labels), dtype=np.int64)
    for c in range(recipe.num_classes):
        idx = np.flatnonzero(labels == c)
        rank[idx] = np.arange(len(idx))
    held = rank < recipe.holdout_per_class
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    y = torch.from_numpy(labels)
    return (x[~held], y[~held]), (x[held], y[held])


def _fit(
    model: torch.nn.Module,
    x_tr: torch.Tensor,
    y_tr: torch.Tensor,
    recipe: Recipe,
    dev: torch.device,
    progress: bool,
) -> int:
    """Train every parameter with AdamW, warmup + cosine, shift augmentation; returns steps."""
    from tqdm.auto import tqdm

    model.to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    spe = math.ceil(len(y_tr) / recipe.batch_size)
    total = recipe.epochs * spe
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, total, recipe.warmup_epochs * spe)
    )
    gen = torch.Generator().manual_seed(recipe.seed)
    bar = tqdm(range(recipe.epochs), desc="pretrain", disable=not progress)
    steps = 0
    for _ in bar:
        order = torch.randperm(len(y_tr), generator=gen)
        for i in range(0, len(order), recipe.batch_size):
            idx = order[i : i + recipe.batch_size]
            xb = _augment(x_tr[idx], recipe.shift, gen).to(dev)
            loss = F.cross_entropy(
                model(xb), y_tr[idx].to(dev), label_smoothing=recipe.label_smoothing
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            steps += 1
        bar.set_postfix(loss=f"{loss.item():.3f}")
    return steps


def pretrain(
    recipe: Recipe, out: str | Path, device: str = "cpu", progress: bool = True
) -> dict[str, Any]:
    """Train the backbone on fractal classes and save it (without head) as safetensors.

    Returns:
        The model-card fields: recipe, steps, source-task held-out accuracy, SHA-256, time.
    """
    from pebench.datasets.fractals import GENERATOR_VERSION

    torch.manual_seed(recipe.seed)
    dev = torch.device(device)
    t0 = time.perf_counter()
    bb = create_backbone(recipe.backbone, "random", image_size=recipe.image_size)
    (x_tr, y_tr), (x_te, y_te) = _fractal_splits(recipe, bb.mean, bb.std)
    model = bb.model
    model.reset_classifier(recipe.num_classes)
    steps = _fit(model, x_tr, y_tr, recipe, dev, progress)
    model.eval()
    with torch.no_grad():
        pred = torch.cat(
            [model(x_te[i : i + 512].to(dev)).argmax(-1).cpu() for i in range(0, len(y_te), 512)]
        )
    acc = float((pred == y_te).float().mean())
    model.reset_classifier(0)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_weights(model.cpu(), out)
    return {
        "recipe": dataclasses.asdict(recipe),
        "data_generator": f"pebench.datasets.fractals v{GENERATOR_VERSION}",
        "steps": steps,
        "source_holdout_top1": acc,
        "sha256": sha256_file(out),
        "file": out.name,
        "train_time_s": round(time.perf_counter() - t0, 1),
        "device": str(dev),
        "torch_version": torch.__version__,
    }


def model_card(card: dict[str, Any]) -> str:
    """Markdown model card of a pretrained checkpoint."""
    r = card["recipe"]
    rows = [
        ("architecture", f"timm `{r['backbone']}` (D=96, depth 4, 3 heads, patch 4, 32 px, cls)"),
        ("file", f"`{card['file']}` (safetensors, backbone without head)"),
        ("SHA-256", f"`{card['sha256']}`"),
        ("source data", f"{card['data_generator']}: {r['num_classes']} IFS fractal classes × "
                        f"{r['per_class']} training images"),
        ("recipe", f"AdamW lr {r['lr']}, wd {r['weight_decay']}, batch {r['batch_size']}, "
                   f"{r['epochs']} epochs ({r['warmup_epochs']} warmup, cosine), label smoothing "
                   f"{r['label_smoothing']}, shift ±{r['shift']} px + flip"),
        ("seed", str(r["seed"])),
        ("steps", str(card["steps"])),
        ("source-task accuracy", f"{100 * card['source_holdout_top1']:.1f} % top-1 on "
                                 f"{r['holdout_per_class']} held-out images per class"),
        ("trained on", f"{card['device']}, torch {card['torch_version']}, "
                       f"{card['train_time_s']} s"),
    ]  # fmt: skip
    # the values are this recipe's own (trusted, code spans meant): Markdown cells
    table = "\n".join(mdtable.table(["field", "value"], [(k, Markdown(v)) for k, v in rows]))
    return f"""# {r["backbone"]}.fractal_v1 — pebench's embedded micro ViT

Generated by `pebench pretrain`; regenerate it with that command, never edit by hand.

{table}

The source data share no generator with the demo suite's target tasks (shapes, textures, counts,
orientations on noisy backgrounds): the demo measures transfer, not memorisation.

```json
{json.dumps(card, indent=1)}
```
"""
