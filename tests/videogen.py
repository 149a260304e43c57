"""Write tiny synthetic videos (PyAV) and the SSv2 / HMDB51 list layouts around them.

Every frame is uniform in red and green and a ramp in blue:
    red   = ``frame_value(k)``: encodes the frame index ``k``
    green = ``class_value(c)``: encodes the class ``c``
    blue  = ``x * 255 / (W - 1)``: a horizontal ramp, so spatial crops can be told apart.
Codecs are lossy (and go through YUV 4:2:0), so readers compare with a tolerance below half the
step between neighbouring codes.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

FRAME_STEP = 8
CLASS_STEP = 40
TOL = 3.5  # below FRAME_STEP / 2 and CLASS_STEP / 2


def frame_value(k: int) -> int:
    return 16 + FRAME_STEP * k


def class_value(c: int) -> int:
    return 30 + CLASS_STEP * c


def decode_frame_index(red: float) -> float:
    return (red - 16) / FRAME_STEP


def decode_class(green: float) -> float:
    return (green - 30) / CLASS_STEP


def codec_for(path: Path) -> str:
    if path.suffix == ".avi":
        return "mpeg4"
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def write_video(path: Path, label: int, frames: int = 24, width: int = 48, height: int = 32):
    """Encode ``frames`` frames (at most 30: the red code must fit in uint8) at 25 fps."""
    if not 1 <= frames <= 30:
        raise ValueError(f"frames must be 1..30 for the frame-index code, got {frames}")
    path.parent.mkdir(parents=True, exist_ok=True)
    ramp = np.linspace(0, 255, width).round().astype(np.uint8)
    with av.open(str(path), mode="w") as out:
        stream = out.add_stream(codec_for(path), rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if stream.codec_context.name == "libx264":
            stream.options = {"crf": "0", "preset": "ultrafast"}
        else:
            stream.codec_context.qmin, stream.codec_context.qmax = 1, 2
            stream.bit_rate = 4_000_000
        for k in range(frames):
            img = np.empty((height, width, 3), dtype=np.uint8)
            img[..., 0] = frame_value(k)
            img[..., 1] = class_value(label) % 256  # decodable for the first classes
            img[..., 2] = ramp[None, :]
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def make_ssv2(
    root: Path, classes: int = 3, train_per_class: int = 10, val_per_class: int = 2, **kw
) -> Path:
    """``root/{train,val,test}.csv`` (test = val) and ``root/videos/<id>.mp4``; returns root."""
    lines: dict[str, list[str]] = {"train": [], "val": []}
    vid = 0
    for split, per in (("train", train_per_class), ("val", val_per_class)):
        for c in range(classes):
            for _ in range(per):
                rel = f"videos/{vid}.mp4"
                write_video(root / rel, c, **kw)
                lines[split].append(f"{rel} {c}")
                vid += 1
    for name, body in (("train", lines["train"]), ("val", lines["val"]), ("test", lines["val"])):
        (root / f"{name}.csv").write_text("\n".join(body) + "\n")
    return root


def hmdb_class(c: int) -> str:
    return f"action_{c:02d}"  # sorted names = class order


def make_hmdb(
    root: Path, classes: int = 3, train_per_class: int = 7, test_per_class: int = 3, **kw
) -> Path:
    """HMDB51 layout: ``root/<class>/<file>.avi`` + ``root/testTrainMulti_7030_splits``.

    Split 1 uses ids 1 (train) / 2 (test) in file order plus one unused (0) video per class;
    splits 2 and 3 rotate the test set so the three splits differ.
    """
    splits = root / "testTrainMulti_7030_splits"
    splits.mkdir(parents=True, exist_ok=True)
    n = train_per_class + test_per_class + 1
    for c in range(classes):
        name = hmdb_class(c)
        files = [f"{name}_clip_{i}.avi" for i in range(n)]
        for f in files:
            write_video(root / name / f, c, **kw)
        for k in (1, 2, 3):
            ids = [1] * train_per_class + [2] * test_per_class
            shift = (k - 1) * test_per_class
            ids = ids[shift:] + ids[:shift]
            body = "".join(f"{f} {i} \n" for f, i in zip(files, [*ids, 0], strict=True))
            (splits / f"{name}_test_split{k}.txt").write_text(body)
    return root
