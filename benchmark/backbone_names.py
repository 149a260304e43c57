"""pebench's own backbones and shipped checkpoints by name, and how weights are tagged on rows.

Plain data and file hashing, no torch or timm: planning a sweep names its runs (whose ids carry
the weights tag) without building a model, so a rerun of recorded runs stays cheap.
:mod:`pebench.backbones` registers these architectures in timm and builds them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from pebench.errors import PebenchError

RANDOM = "random"
#: the small image ViTs pebench registers in timm: name -> VisionTransformer arguments
SMALL: dict[str, dict[str, Any]] = {
    "pebench_vit_test_cls": dict(embed_dim=64, depth=2, num_heads=4, patch_size=8),
    "pebench_vit_test_gap": dict(
        embed_dim=64, depth=2, num_heads=4, patch_size=8, class_token=False, global_pool="avg"
    ),
    "pebench_vit_micro": dict(embed_dim=96, depth=4, num_heads=3, patch_size=4),
}
#: the video ViTs pebench registers in timm (:mod:`pebench.backbones.videomae`): name -> arguments
VIDEO_MODELS: dict[str, dict[str, Any]] = {
    "pebench_videomae_base_patch16_224": dict(
        img_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12, num_frames=8
    ),
    "pebench_video_test": dict(
        img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, num_frames=4
    ),
}
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: checkpoints shipped with pebench: tag -> (file, SHA-256); see ``weights/*.md``. The first tag
#: of an architecture is its default (timm's default pretrained config).
EMBEDDED = {
    "pebench_vit_micro.fractal_v1": (
        WEIGHTS_DIR / "pebench_vit_micro-fractal_v1.safetensors",
        "e02ac75bc0caa1287542fcc04901b4b132cfac7929c1d38850843e83a98490e6",
    ),
}


class BackboneError(PebenchError, ValueError):
    """Unknown backbone, unreadable weights file, or weights that cannot be fetched."""


def is_own(name: str) -> bool:
    """True for a backbone pebench registers itself (``name`` may carry a ``.tag``)."""
    base = name.split(".")[0]
    return base in SMALL or base in VIDEO_MODELS


def is_video_model_name(name: str) -> bool:
    """True for the registered video backbones (``name`` may carry a ``.tag``)."""
    return name.split(".")[0] in VIDEO_MODELS


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def embedded_weights(name: str) -> tuple[Path, str, str] | None:
    """``(path, sha256, tag)`` if ``name`` resolves to a checkpoint shipped with pebench.

    ``name`` without a tag resolves to its architecture's first embedded tag, as timm resolves
    a name to its default pretrained config.

    Raises:
        BackboneError: a tag one of pebench's own architectures does not ship.
    """
    base, _, tag = name.partition(".")
    full = name if tag else next((t for t in EMBEDDED if t.split(".")[0] == base), None)
    if full not in EMBEDDED:
        if tag and is_own(name):
            shipped = [t.partition(".")[2] for t in EMBEDDED if t.split(".")[0] == base]
            raise BackboneError(
                f"unknown weights tag {tag!r} for {base!r}: pebench ships "
                + (", ".join(map(repr, shipped)) if shipped else "none (use --weights)")
            )
        return None
    path, sha = EMBEDDED[full]
    return path, sha, full


def check_embedded(path: Path, sha256: str, tag: str) -> None:
    """Refuse a missing or modified embedded checkpoint (names the file)."""
    if not path.is_file():
        raise BackboneError(f"embedded weights for {tag} missing: {path} (run `pebench pretrain`)")
    if sha256_file(path) != sha256:
        raise BackboneError(f"embedded weights {path} do not match their SHA-256 {sha256}")


def video_weights_path(name: str, weights: str | None) -> str:
    """The local checkpoint a video backbone needs (it has no hub weights)."""
    if weights is None:
        raise BackboneError(
            f"{name!r} has no hub weights: pass --weights PATH (a local VideoMAE checkpoint, "
            "e.g. the official ViT-B Kinetics-400 pretraining file) or --weights random"
        )
    if not Path(weights).is_file():
        raise BackboneError(f"weights file not found: {weights}")
    return weights


def weights_tag(name: str, weights: str | None) -> str:
    """How weights are recorded on result rows (computed without building the model).

    ``random``; ``file:<sha256[:16]>`` for a local file; ``embedded:<tag>@<sha256[:16]>`` for a
    checkpoint shipped with pebench (whose file is checked against that SHA-256); ``hub:<name>``
    for Hugging Face hub weights.

    Raises:
        BackboneError: a local file that does not exist or cannot be read, or an embedded
            checkpoint missing or modified (names the path).
    """
    if weights == RANDOM:
        return RANDOM
    if is_video_model_name(name):
        weights = video_weights_path(name, weights)
    if weights is None:
        embedded = embedded_weights(name)
        if embedded is None:
            return f"hub:{name}"
        check_embedded(*embedded)
        return f"embedded:{embedded[2]}@{embedded[1][:16]}"
    path = Path(weights)
    if not path.is_file():
        raise BackboneError(f"weights file not found: {path}")
    try:
        return f"file:{sha256_file(path)[:16]}"
    except OSError as err:
        raise BackboneError(f"weights file unreadable: {path} ({err})") from err


__all__ = [
    "EMBEDDED",
    "RANDOM",
    "SMALL",
    "VIDEO_MODELS",
    "WEIGHTS_DIR",
    "BackboneError",
    "check_embedded",
    "embedded_weights",
    "is_own",
    "is_video_model_name",
    "sha256_file",
    "video_weights_path",
    "weights_tag",
]
