"""Decoding a split's images into its cache arrays (uint8 ``S × S`` RGB, one digest each).

Listed image files are decoded with PIL (RGB, direct bicubic resize to ``S × S``), each distinct
path once, in threads; sources that yield decoded arrays (TFDS) are resized in order with the
same rule. Every image also gets a digest of its decoded pixels (the train/test overlap check
compares them).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from pebench.datasets.cache_store import _new_array
from pebench.datasets.formats import (
    ArraySplit,
    DatasetError,
    ImageError,
    SplitList,
    array_image,
    check_inside,
    decode_image,
)
from pebench.datasets.sources import SourceSplit

_CHUNK = 256


def _decode_split(
    sl: SourceSplit, out_dir: Path, image_size: int, workers: int, progress: bool
) -> tuple[np.ndarray, int]:
    """Decode a split into ``out_dir``; returns its digests and the number of decodes."""
    n = len(sl.labels)
    images = _new_array(out_dir / f"{sl.name}.images.npy", (n, image_size, image_size, 3))
    digests = np.zeros((n, 16), dtype=np.uint8)
    if isinstance(sl, ArraySplit):
        _resize_stream(sl, images, digests, image_size, progress)
        todo = range(n)
    else:
        todo = _decode_files(sl, images, digests, image_size, workers, progress)
    images.flush()
    np.save(out_dir / f"{sl.name}.labels.npy", sl.labels.astype(np.int64))
    np.save(out_dir / f"{sl.name}.digests.npy", digests)
    del images
    return digests, len(todo)


def _resize_stream(
    sl: ArraySplit, images: np.ndarray, digests: np.ndarray, image_size: int, progress: bool
) -> None:
    """Resize a source's decoded arrays in order; the stream must hold exactly the labelled ones."""
    from tqdm.auto import tqdm

    n, i = len(sl.labels), -1
    for i, arr in enumerate(tqdm(sl.stream(), sl.name, n, leave=False, disable=not progress)):
        if i >= n:
            raise ImageError(f"{sl.origin()}: more than the {n} labelled images")
        images[i], digest = array_image(arr, image_size, sl.where(i))
        digests[i] = np.frombuffer(digest, dtype=np.uint8)
    if i + 1 != n:
        raise ImageError(f"{sl.origin()}: {i + 1} images, but {n} labels")


def _decode_files(
    sl: SplitList,
    images: np.ndarray,
    digests: np.ndarray,
    image_size: int,
    workers: int,
    progress: bool,
) -> list[int]:
    """Decode listed files (each distinct path once, in threads); returns the decoded indices."""
    first: dict[Path, int] = {}
    todo = [i for i, p in enumerate(sl.paths) if first.setdefault(p, i) == i]
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc=sl.name, disable=not progress, leave=False)

    def work(i: int) -> tuple[int, np.ndarray, bytes]:
        try:
            if sl.root is not None:
                check_inside(sl.paths[i], sl.root)
            return (i, *decode_image(sl.paths[i], image_size))
        except DatasetError as err:
            raise type(err)(f"{err} (listed in {sl.where(i)})") from err

    with ThreadPoolExecutor(max(1, workers)) as pool:
        for start in range(0, len(todo), 4 * _CHUNK):
            for i, arr, digest in pool.map(work, todo[start : start + 4 * _CHUNK]):
                images[i] = arr
                digests[i] = np.frombuffer(digest, dtype=np.uint8)
            bar.update(min(4 * _CHUNK, len(todo) - start))
    bar.close()
    for i, p in enumerate(sl.paths):
        if first[p] != i:
            images[i], digests[i] = images[first[p]], digests[first[p]]
    return todo
