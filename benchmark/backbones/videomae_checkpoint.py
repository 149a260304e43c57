"""VideoMAE checkpoints renamed into the timm layout of the pebench video ViT.

Official fine-tuning and pretraining layouts and AdaptFormer's conversion are read into
:class:`pebench.backbones.videomae.VideoVisionTransformer` (see
:func:`convert_videomae_state_dict`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from pebench.backbones.checkpoint import CheckpointError, names, read_checkpoint
from pebench.backbones.videomae import VideoVisionTransformer, is_video_model, sinusoid_table

#: pretraining-only keys (decoder side) dropped from a pretraining checkpoint
_PRETRAIN_ONLY = ("decoder.", "encoder_to_decoder.", "mask_token")


def convert_videomae_state_dict(
    state: Mapping[str, torch.Tensor], model: VideoVisionTransformer
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename a VideoMAE checkpoint into ``model``'s (timm) state-dict layout.

    Accepted layouts (keys as in ``MCG-NJU/VideoMAE``, ``ShoufaChen/AdaptFormer``):

    * **fine-tuning** (``modeling_finetune``): ``patch_embed.proj.*``, ``blocks.i.attn.qkv.weight``
      with separate ``blocks.i.attn.q_bias``/``v_bias``, ``blocks.i.mlp.fc1/fc2.*``,
      ``fc_norm.*``; the task ``head.*`` is dropped. A final ``norm.*`` (a model fine-tuned without
      mean pooling) is refused.
    * **pretraining** (``modeling_pretrain``): the same encoder keys under ``encoder.``; the
      decoder (``decoder.*``, ``encoder_to_decoder.*``, ``mask_token``) and the encoder's final
      ``norm.*`` are dropped, and ``fc_norm`` starts as a fresh LayerNorm (weight 1, bias 0), as in
      VideoMAE's and AdaptFormer's fine-tuning scripts.
    * **AdaptFormer ``convert.py``**: a pretraining checkpoint whose ``attn.qkv.weight`` is split
      into ``attn.q_proj/k_proj/v_proj.weight`` and whose ``mlp.fc1/fc2`` sit at
      ``blocks.i.fc1/fc2``.
    * **pebench/timm** (``attn.qkv.bias`` present): used as is.

    The fused bias becomes ``qkv.bias = cat(q_bias, 0, v_bias)``. A ``pos_embed`` tensor is
    accepted only if it equals the fixed sinusoid table (it is dropped).

    Returns:
        The converted state dict (exactly ``model``'s keys) and notes on what was dropped or set.

    Raises:
        CheckpointError: unknown keys, missing keys or shape mismatches, each named.
    """
    state, notes = dict(state), []
    if any(k.startswith("encoder.") for k in state):
        state = _from_pretraining(state, model, notes)
    else:
        _from_finetuning(state, notes)
    _drop_fixed_pos_embed(state, model)
    for i in range(len(model.blocks)):
        _convert_block(state, f"blocks.{i}.")
    _check_fits(state, model)
    return state, notes


def _from_pretraining(
    state: dict[str, torch.Tensor], model: VideoVisionTransformer, notes: list[str]
) -> dict[str, torch.Tensor]:
    """The encoder of a pretraining checkpoint; decoder and final norm dropped, fc_norm fresh."""
    dropped = [k for k in state if k.startswith(_PRETRAIN_ONLY)]
    for key in dropped:
        del state[key]
    outside = [k for k in state if not k.startswith("encoder.")]
    if outside:
        raise CheckpointError(
            f"pretraining checkpoint has keys outside `encoder.`/decoder: {names(outside)}"
        )
    state = {k.removeprefix("encoder."): v for k, v in state.items()}
    final_norm = [k for k in ("norm.weight", "norm.bias") if state.pop(k, None) is not None]
    notes.append(
        f"pretraining checkpoint: dropped {len(dropped)} decoder keys and the encoder's final "
        f"norm ({', '.join(final_norm) or 'absent'})"
    )
    if "fc_norm.weight" not in state and "fc_norm.bias" not in state:
        dim = model.embed_dim
        state["fc_norm.weight"], state["fc_norm.bias"] = torch.ones(dim), torch.zeros(dim)
        notes.append("fc_norm (not pretrained) set to weight 1, bias 0")
    return state


def _from_finetuning(state: dict[str, torch.Tensor], notes: list[str]) -> None:
    """A fine-tuning checkpoint in place: mean pooling required, the task head dropped."""
    if "norm.weight" in state or "norm.bias" in state:
        raise CheckpointError(
            "checkpoint has a final `norm` (fine-tuned with use_mean_pooling=False, cls-style "
            "pooling); pebench's VideoMAE layout is mean pooling + `fc_norm`"
        )
    head = [k for k in ("head.weight", "head.bias") if state.pop(k, None) is not None]
    if head:
        notes.append("dropped the checkpoint's task head (head.weight, head.bias)")


def _drop_fixed_pos_embed(state: dict[str, torch.Tensor], model: VideoVisionTransformer) -> None:
    """Accept a ``pos_embed`` only if it is the fixed sinusoid table (then drop it)."""
    if "pos_embed" not in state:
        return
    pos = state.pop("pos_embed")
    table = sinusoid_table(model.patch_embed.num_patches, model.embed_dim)
    if pos.shape != table.shape or not torch.allclose(pos.float(), table, atol=1e-5):
        raise CheckpointError(
            f"checkpoint has a pos_embed of shape {tuple(pos.shape)} that is not the fixed "
            f"sinusoid table {tuple(table.shape)}: learned position embeddings are not "
            "supported"
        )


def _check_fits(state: dict[str, torch.Tensor], model: VideoVisionTransformer) -> None:
    """Exactly the model's keys, with the model's shapes (every mismatch named)."""
    expected = model.state_dict()
    unknown = [k for k in state if k not in expected]
    missing = [k for k in expected if k not in state]
    if unknown or missing:
        parts = [f"unknown keys: {names(unknown)}"] if unknown else []
        parts += [f"missing keys: {names(missing)}"] if missing else []
        raise CheckpointError(
            f"checkpoint does not match {model.pretrained_cfg.get('architecture', 'the model')} "
            f"in the VideoMAE layout ({'; '.join(parts)})"
        )
    wrong = [
        f"{k} {tuple(v.shape)} (model {tuple(expected[k].shape)})"
        for k, v in state.items()
        if v.shape != expected[k].shape
    ]
    if wrong:
        raise CheckpointError(f"checkpoint shapes do not match the model: {names(wrong)}")


def _convert_block(state: dict[str, torch.Tensor], pre: str) -> None:
    """Turn one block's official keys into timm's, in place (absent keys are left missing)."""
    attn = pre + "attn."
    split = [attn + f"{w}_proj.weight" for w in "qkv"]
    if all(k in state for k in split):  # AdaptFormer convert.py
        state[attn + "qkv.weight"] = torch.cat([state.pop(k) for k in split], dim=0)
    for layer in ("fc1", "fc2"):
        for what in ("weight", "bias"):
            if pre + f"{layer}.{what}" in state:
                state[pre + f"mlp.{layer}.{what}"] = state.pop(pre + f"{layer}.{what}")
    q_key, v_key = attn + "q_bias", attn + "v_bias"
    if q_key in state or v_key in state:
        if attn + "qkv.bias" in state:
            raise CheckpointError(f"checkpoint has both {attn}qkv.bias and {attn}q_bias/v_bias")
        if q_key not in state or v_key not in state:
            raise CheckpointError(f"checkpoint has only one of {q_key}, {v_key}")
        q, v = state.pop(q_key), state.pop(v_key)
        state[attn + "qkv.bias"] = torch.cat([q, torch.zeros_like(q), v])


def load_videomae_checkpoint(model: VideoVisionTransformer, path: str | Path) -> list[str]:
    """Load a local VideoMAE checkpoint into ``model`` (see :func:`convert_videomae_state_dict`).

    Returns:
        Notes on what was dropped or set (decoder, task head, fc_norm).

    Raises:
        CheckpointError: unreadable file, or keys/shapes that do not fit (names them).
    """
    if not is_video_model(model):
        raise CheckpointError(f"{type(model).__name__} is not a pebench video backbone")
    state, notes = convert_videomae_state_dict(read_checkpoint(path), model)
    model.load_state_dict(state, strict=True)
    return notes


__all__ = ["convert_videomae_state_dict", "load_videomae_checkpoint"]
