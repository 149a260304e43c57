"""The prediction stage of a run: the declared tunable state, evaluated blind in a fresh process.

A fresh child of the forkserver (no plugin imported yet, nothing of the training process)
builds the backbone from its weights and attaches the method from its config exactly as the
training stage did (same seeds, so constant buffers are the same), loads **exactly** the
tunable state training sent (the trainable names and shapes of the prepared model: anything
else is refused), and predicts the evaluation split it receives **without labels**
(:func:`pebench.data.blind`). It sends back the predicted class of every example; the
supervisor (:mod:`pebench.supervise`), where no plugin code runs, scores them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pebench.data import Split, place
from pebench.method import ContractError, load_tunable_state_dict
from pebench.run import RunSpec, build_model, device_of
from pebench.stage import Channel
from pebench.train import evaluate


def load_state(model: Any, state: bytes, method: str) -> None:
    """Load safetensors ``state`` into a prepared ``model``: exactly its trainable tensors.

    Raises:
        ContractError: names or shapes differ from the prepared model's trainable set.
    """
    from safetensors.torch import load

    tensors = load(state)
    try:
        load_tunable_state_dict(model, tensors)
    except (KeyError, RuntimeError) as err:
        raise ContractError(
            f"method {method!r}: the tunable state training sent does not fit the model its "
            f"config builds: {err}"
        ) from None


def predict(spec: RunSpec, state: bytes, blind_split: Split) -> tuple[np.ndarray, float, bool]:
    """``(predicted class per example, examples per second, split resident on the device)``."""
    opts = spec.options
    device = device_of(opts)
    budget, task = spec.resolved()
    bb = build_model(spec, budget, task.num_classes, {})
    model = bb.model.to(device)
    load_state(model, state, spec.method)
    (resident,) = place([blind_split], device, opts.device_share)
    scored = evaluate(
        model, blind_split, budget, device, workers=opts.data_workers, compile=opts.compile
    )
    return scored.pred, scored.images_per_s, bool(resident)


def stage(chan: Channel, spec: RunSpec, state: bytes, blind_split: Split) -> None:
    """The prediction stage's process body (see :func:`pebench.stage.run_stage`)."""
    pred, ips, resident = predict(spec, state, blind_split)
    body = {"images_per_s": ips, "resident": resident}
    chan.send("done", body, np.ascontiguousarray(pred, dtype="<i8").tobytes())


__all__ = ["load_state", "predict", "stage"]
