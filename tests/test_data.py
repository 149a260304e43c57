"""Demo suite data and the core split loader."""

import numpy as np
import pytest
import torch

from pebench.data import DataError, ImageArray, Split, batches, load_split
from pebench.datasets import TaskSpec, get_suite, get_task, resolve_tasks
from pebench.datasets.demo import SIZES, generate
from pebench.registry import RegistryError


@pytest.mark.parametrize("task", ["shapes", "texture", "count", "orientation"])
def test_demo_splits_are_deterministic_balanced_and_disjoint(task):
    spec = get_task(f"demo/{task}")
    x, y = generate(task, "train")
    x2, y2 = generate(task, "train")
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    assert x.shape == (SIZES["train"], 32, 32, 3) and x.dtype == np.uint8
    counts = np.bincount(y, minlength=spec.num_classes)
    assert counts.max() - counts.min() <= 1
    tv, tvy = generate(task, "trainval")
    v, vy = generate(task, "val")
    assert np.array_equal(tv, np.concatenate([x, v])) and np.array_equal(
        tvy, np.concatenate([y, vy])
    )
    test, _ = generate(task, "test")
    train_set = {img.tobytes() for img in x}
    assert not any(img.tobytes() in train_set for img in test)


def test_images_depend_on_the_label():
    x, y = generate("orientation", "test")
    # a linear classifier on raw pixels must beat chance clearly: the label is in the image
    feats = x.reshape(len(x), -1).astype(np.float64) / 255
    half = len(x) // 2
    w, *_ = np.linalg.lstsq(np.c_[feats[:half], np.ones(half)], np.eye(6)[y[:half]], rcond=None)
    pred = (np.c_[feats[half:], np.ones(len(x) - half)] @ w).argmax(1)
    assert (pred == y[half:]).mean() > 1 / 6 + 0.05


def test_load_split_normalises_and_hashes():
    spec = get_task("demo/shapes")
    s = load_split(spec, "train", None, 32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    x, y = s.data.batch(torch.arange(len(s)))
    assert x.shape == (320, 3, 32, 32) and s.labels.dtype == torch.int64
    assert torch.equal(y, s.labels)
    assert -1.0 <= x.min() and x.max() <= 1.0
    again = load_split(spec, "train", None, 48, (0.5,) * 3, (0.5,) * 3, subset=10)
    assert len(again) == 10 and again.data.batch(torch.arange(10))[0].shape == (10, 3, 48, 48)
    assert len(s.sha256) == 16


def _bad_loader(spec, split, data_dir, image_size):
    return np.zeros((4, 8, 8, 3), np.uint8), np.array([0, 1, 2, 9])


def test_label_out_of_range_names_task_and_split(monkeypatch):
    spec = TaskSpec(
        name="x/bad",
        suite="x",
        group="g",
        num_classes=3,
        version="1",
        data_format="procedural",
        splits=dict(train="tr", val="v", trainval="tv", test="te"),
        loader="tests:unused",
    )
    monkeypatch.setattr(TaskSpec, "load_fn", lambda self: _bad_loader)
    with pytest.raises(
        DataError, match=r"task 'x/bad', split 'tr': labels span 0..9, expected 0..2"
    ):
        load_split(spec, "train", None, 8, (0,) * 3, (1,) * 3)


def test_task_selection_and_suggestions():
    assert [t.name for t in resolve_tasks("demo")] == list(get_suite("demo").tasks)
    assert [t.name for t in resolve_tasks("demo/count,demo,demo/count")][0] == "demo/count"
    with pytest.raises(RegistryError, match="Did you mean 'demo/texture'"):
        resolve_tasks("demo/textur")


def _reference(images, idx, mean, std):
    x = images[idx].astype(np.float64).transpose(0, 3, 1, 2) / 255
    return (x - np.array(mean).reshape(1, 3, 1, 1)) / np.array(std).reshape(1, 3, 1, 1)


def test_image_array_streams_batches_from_a_memory_map(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (50, 16, 16, 3), dtype=np.uint8)
    np.save(tmp_path / "x.npy", images)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.6, 0.7)
    arr = ImageArray(np.asarray(mapped), np.arange(50) % 7, 16, mean, std)
    assert np.shares_memory(arr.images, mapped)  # kept as the map, not copied to RAM
    idx = torch.tensor([7, 3, 49, 0])
    x, y = arr.batch(idx)
    assert x.dtype == torch.float32 and y.tolist() == [0, 3, 0, 0]
    np.testing.assert_allclose(x.numpy(), _reference(images, idx.numpy(), mean, std), atol=1e-6)
    # resizing per batch gives what resizing the whole split gave
    big = ImageArray(images, np.zeros(50), 24, mean, std)
    whole = torch.nn.functional.interpolate(
        torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255, size=(24, 24), mode="bicubic"
    ).clamp(0, 1)
    want = (whole - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(big.batch(idx)[0], want[idx])


class _PerItem(torch.utils.data.Dataset):
    """A dataset without a vectorised ``batch``: goes through a DataLoader (like video)."""

    views = 1

    def __init__(self, arr):
        self.arr, self.labels = arr, arr.labels

    def __len__(self):
        return len(self.arr)

    def __getitem__(self, i):
        return self.arr[i]

    def set_epoch(self, epoch):
        pass


@pytest.mark.parametrize("workers", [0, 2])
def test_dataloader_path_yields_the_same_batches(workers):
    images = np.random.default_rng(1).integers(0, 256, (21, 8, 8, 3), dtype=np.uint8)
    arr = ImageArray(images, np.arange(21) % 5, 8, (0.5,) * 3, (0.25,) * 3)
    direct = Split(arr, torch.from_numpy(arr.labels), "h")
    per_item = Split(_PerItem(arr), torch.from_numpy(arr.labels), "h")
    order = torch.randperm(21, generator=torch.Generator().manual_seed(3))
    a = list(batches(direct, order, 4))
    b = list(batches(per_item, order, 4, workers=workers))
    assert [len(y) for _, y in a] == [4, 4, 4, 4, 4, 1]
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


class _Views(torch.utils.data.Dataset):
    """Each item stacks 3 views; only their mean carries the label."""

    views = 3

    def __init__(self):
        self.labels = np.array([0, 1, 1, 0])

    def __len__(self):
        return 4

    def __getitem__(self, i):
        y = int(self.labels[i])
        # views 0 and 1 lean to the wrong class, view 2 strongly to y: only the mean is right
        v = torch.zeros(3, 2)
        v[:2, 1 - y] = 1.0
        v[2, y] = 5.0
        return v, y

    def set_epoch(self, epoch):
        pass


def test_multi_view_evaluation_averages_logits():
    from pebench.budget import get_budget
    from pebench.train import evaluate

    split = Split(_Views(), torch.tensor([0, 1, 1, 0]), "h")
    scored = evaluate(torch.nn.Identity(), split, get_budget("demo-smoke"), torch.device("cpu"))
    assert scored.top1 == 1.0 and scored.images_per_s > 0
    assert scored.pred.tolist() == [0, 1, 1, 0] and scored.correct.all()
    # the alternatives score 0: the first view alone, or a majority vote of per-view argmaxes
    views = torch.stack([split.data[i][0] for i in range(4)])
    assert (views[:, 0].argmax(-1) == split.labels).sum() == 0
    votes = views.argmax(-1).mode(dim=1).values
    assert (votes == split.labels).sum() == 0
