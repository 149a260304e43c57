#!/usr/bin/env bash
# The GPU figures of issues #14 and #23 in one offline call (about 4 minutes on one H100 by the
# estimate in the step notes; each step prints its seconds):
#   versions   python, torch, CUDA, cuDNN, timm and the others; the GPU; which pebench runs;
#   harness_*  harness / bare-loop ratios (train, eval, merged eval) of lora and arc, micro ViT
#              and ViT-B/16 at 224 px, median [IQR] over interleaved rounds;
#   data       a generated VTAB-1k task at its real sizes (dtd: 800/200/1000/1880, 256 px
#              JPEGs) prepared into a cache;
#   run        one LoRA sweep (one lr, one seed) of ViT-B/16, 224 px, batch 64, bf16 through the
#              whole runner: steady-state img/s and MFU, first epoch, data fraction, peak memory;
#   streamed   the same training with the split streamed from the host, resident on the device,
#              and resident again: both speeds, max |streamed - resident| over the trained
#              parameters next to the resident-vs-resident noise floor (GPU reruns differ at
#              round-off: no deterministic mode on CUDA);
#   estimate   the projected time of one method's vtab1k-v2 sweep from a measured throughput.
# Usage: scripts/gpu_check.sh [OUT]    (OUT defaults to gpu-check; PYTHON picks the interpreter)
# Needs a CUDA PyTorch, timm, pandas, matplotlib, safetensors and tqdm; no pip, no network, no
# pebench install: pebench runs from this checkout (a scratch package folder on PYTHONPATH).
# OUT receives only text and row files (a few hundred KB); generated images, the cache and the
# runs' records live in a scratch folder that is removed at the end. Every step runs even when
# one fails; the last line names the failed steps, and the exit status is their number.
# CPU dry run of the same code paths with a tiny backbone and small sizes (minutes on 2 cores):
#   GPU_CHECK_DRY=1 scripts/gpu_check.sh /tmp/gpu-check-dry
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-${OUT:-gpu-check}}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
PYTHON=${PYTHON:-$(command -v python3 || command -v python || echo python3)}
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/pebench-gpu-check.XXXXXX")
trap 'rm -rf "$SCRATCH"' EXIT
export HF_HUB_OFFLINE=1 PYTHONDONTWRITEBYTECODE=1

if [[ ${GPU_CHECK_DRY:-0} == 1 ]]; then  # the CPU dry run: same steps, tiny sizes
    DEVICE=cpu BACKBONE=pebench_vit_test_cls IMAGE=32 PX=40 BATCH=16 EPOCHS=2
    MICRO=(--rounds 2 --steps 2) VITB=(--rounds 2 --steps 1 --batch-size 8)
else
    DEVICE=cuda BACKBONE=vit_base_patch16_224 IMAGE=224 PX=256 BATCH=64 EPOCHS=3
    MICRO=(--rounds 7 --steps 20) VITB=(--rounds 5 --steps 10 --batch-size 64)
fi
export GPU_CHECK_DEVICE=$DEVICE GPU_CHECK_EPOCHS=$EPOCHS

# pebench from this checkout without installing it: benchmark/ is the package pebench, methods/
# and datasets/ its subpackages (pyproject's package-dir), so a scratch folder holds a pebench/
# of links to them; every process (run children, torchrun ranks) finds it on PYTHONPATH.
mkdir -p "$SCRATCH/py/pebench"
ln -s "$ROOT"/benchmark/* "$SCRATCH/py/pebench/"
ln -s "$ROOT/methods" "$ROOT/datasets" "$SCRATCH/py/pebench/"
export PYTHONPATH="$SCRATCH/py${PYTHONPATH:+:$PYTHONPATH}"

FAILED=()
step() {  # step NAME COMMAND...: its output on the terminal and in $OUT/NAME.txt
    local name=$1 t0=$SECONDS
    shift
    echo "=== $name"
    if "$@" 2>&1 | tee "$OUT/$name.txt"; then
        echo "=== $name: ok ($((SECONDS - t0)) s)"
    else
        FAILED+=("$name")
        echo "=== $name: FAILED ($((SECONDS - t0)) s)"
    fi
}
pebench() { "$PYTHON" -m pebench.cli "$@"; }

# ~5 s
step versions "$PYTHON" - <<'PY'
import importlib.metadata as md
import os
import platform
import shutil
import subprocess
import sys

import torch

import pebench

print(f"python {platform.python_version()} ({sys.executable})")
for pkg in ("torch", "timm", "numpy", "pandas", "matplotlib", "safetensors", "tqdm"):
    try:
        print(f"{pkg} {md.version(pkg)}")
    except md.PackageNotFoundError:
        print(f"{pkg} not installed")
print(f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
print(f"pebench {pebench.__version__} from {os.path.realpath(pebench.__file__)}")
git = subprocess.run(["git", "-C", os.path.dirname(os.path.realpath(pebench.__file__)),
                      "rev-parse", "HEAD"], capture_output=True, text=True)
print(f"git {git.stdout.strip() or 'unknown'}")
if torch.cuda.is_available():
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        print(f"cuda:{i} {p.name}, {p.total_memory / 2**30:.1f} GiB, {p.multi_processor_count} SMs")
else:
    print("no CUDA device")
if shutil.which("nvidia-smi"):
    q = "--query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit"
    smi = subprocess.run(["nvidia-smi", q, "--format=csv"], capture_output=True, text=True)
    print(smi.stdout.strip() or smi.stderr.strip())
else:
    print("nvidia-smi not found")
want = os.environ["GPU_CHECK_DEVICE"]
sys.exit(0 if want == "cpu" or torch.cuda.is_available() else "no CUDA device: nothing to check")
PY

# ~15 s and ~45 s
step harness_micro pebench bench --harness --methods lora,arc --device "$DEVICE" "${MICRO[@]}"
step harness_vitb16 pebench bench --harness --methods lora,arc --device "$DEVICE" \
    --backbone "$BACKBONE" --image-size "$IMAGE" "${VITB[@]}"

# ~30 s: 3,880 JPEGs (train800val200 repeats train800 and val200, as NOAH's folders do)
step data "$PYTHON" - "$SCRATCH/raw/dtd" "$PX" <<'PY'
import sys
from pathlib import Path

import numpy as np
from PIL import Image

root, px = Path(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
ramp = np.linspace(0, 255, px, dtype=np.float32)
count = 0
lists = {}
for split, n in (("train800", 800), ("val200", 200), ("test", 1880)):
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        count += 1  # a smooth image with a counter in its corner: no two images are equal
        a, b = rng.uniform(0.2, 1.0, 2)
        img = np.stack([ramp[None, :] * a + ramp[:, None] * (1 - a)] * 3, -1) * b
        img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
        img[:4, :4] = [count % 256, count // 256 % 256, 7]
        rel = f"images/{split}/{i:06d}.jpg"
        Image.fromarray(img).save(root / rel, quality=90)
        lines.append(f"{rel} {i % 47}")
    lists[split] = lines
(root / "images" / "train800val200").mkdir(parents=True, exist_ok=True)
both = []
for k, line in enumerate(lists["train800"] + lists["val200"]):
    rel, label = line.split()
    new = f"images/train800val200/{k:06d}.jpg"
    (root / new).hardlink_to(root / rel)
    both.append(f"{new} {label}")
lists["train800val200"] = both
for split, lines in lists.items():
    (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
print(f"{count} distinct {px} px images (+ {len(both)} links), 47 classes in {root}")
PY
# ~20 s
step prepare pebench prepare vtab/dtd --source noah --data-dir "$SCRATCH/raw" \
    --cache-dir "$SCRATCH/cache" --image-size "$IMAGE" --quiet

cat >"$SCRATCH/check.toml" <<TOML
epochs = $EPOCHS
warmup_epochs = 1
batch_size = $BATCH
optimizer = "adamw"
lr_grid = [1e-3]
wd_grid = [1e-4]
image_size = $IMAGE
seeds = [0]
search_seed = 0
grad_clip = 1.0
backbone = "$BACKBONE"
weights = "random"
description = "GPU check: vtab1k-v2's recipe (batch, AdamW, clipping, bf16) for $EPOCHS epochs, one lr, one seed"
TOML

# ~60 s: conformance checks, a search trial (800 train, 200 val) and a final (1000, 1880)
step run pebench run --method lora --tasks vtab/dtd --budget "$SCRATCH/check.toml" \
    --data-dir "$SCRATCH/cache" --results "$SCRATCH/results" --device "$DEVICE" --quiet
step run_rows "$PYTHON" - "$SCRATCH/results" "$OUT/rows" <<'PY'
import math
import os
import shutil
import sys
from pathlib import Path

from pebench.store import RunStore

store, out = RunStore(sys.argv[1]), Path(sys.argv[2])
out.mkdir(exist_ok=True)
rows = store.rows()
for r in rows:
    shutil.copy(store.row_path(r["run_id"]), out)
    if r["status"] != "ok":
        print(f"{r['phase']}: {r['status']}: {r['error'].splitlines()[0]}")
        continue
    steady_epoch_s = (r["train_time_s"] - r["first_epoch_s"]) / (int(os.environ["GPU_CHECK_EPOCHS"]) - 1)
    first_excess = r["first_epoch_s"] - steady_epoch_s
    mfu = "n/a (no bf16 peak known for this device)"
    mfu = mfu if math.isnan(r["mfu"]) else f"{r['mfu']:.1%} (of the steady rate)"
    print(
        f"{r['phase']}: {r['device']}, {r['peak_mem_kind']} peak "
        f"{r['peak_mem_bytes'] / 2**30:.2f} GiB, data resident: {r['data_resident']}, "
        f"{r['device_runs']} run(s) per device\n"
        f"  train {r['train_images_per_s_steady']:.0f} img/s steady (epochs 1..), "
        f"{r['train_images_per_s']:.0f} img/s with the first epoch ({r['first_epoch_s']:.1f} s, "
        f"{first_excess:.1f} s above a steady epoch), MFU {mfu}\n"
        f"  data {r['data_time_s'] / r['train_time_s']:.1%} of train time (host time producing "
        f"batches), eval {r['eval_images_per_s']:.0f} img/s, wall {r['wall_time_s']:.1f} s"
    )
sys.exit(0 if rows and all(r["status"] == "ok" for r in rows) else "not every run is ok")
PY

# ~30 s: three trainings of the search trial's split, same seed
step streamed "$PYTHON" - "$SCRATCH" <<'PY'
import os
import sys

import torch

from pebench.backbones import create_backbone
from pebench.budget import get_budget
from pebench.data import place, run_splits
from pebench.datasets import get_task
from pebench.device import setup
from pebench.method import prepare
from pebench.methods import build_method
from pebench.train import train

scratch = sys.argv[1]
device = os.environ["GPU_CHECK_DEVICE"]
dev = setup(device, threads=1 if device == "cpu" else None)  # CPU dry run: one thread, as runs
budget, task = get_budget(scratch + "/check.toml"), get_task("vtab/dtd")
params = {}
for mode in ("streamed", "resident", "resident again"):
    torch.manual_seed(0)
    bb = create_backbone(budget.backbone, "random", image_size=budget.image_size, tag="random")
    prepare(bb.model, build_method("lora", {"dropout": 0.0}), task.num_classes)
    model = bb.model.to(dev)
    tr, _, _ = run_splits(task, "search", budget, bb.mean, bb.std, scratch + "/cache", 0)
    where = "host"
    if mode != "streamed":
        where = "device" if place([tr], dev, 0.5) == [True] else "host (cannot place on cpu)"
    s = train(model, tr, budget, 1e-3, 1e-4, 0, dev)
    params[mode] = [p.detach().float().cpu() for p in model.parameters() if p.requires_grad]
    print(
        f"{mode:>14} (split on the {where}): {s.steady_images_per_s:.0f} img/s steady, "
        f"{s.train_images_per_s:.0f} img/s overall, data {s.data_time_s:.2f} s of "
        f"{s.train_time_s:.2f} s, loss {s.train_loss:.6f}"
    )


def max_diff(a, b):
    return max((x - y).abs().max().item() for x, y in zip(a, b, strict=True))


scale = max(p.abs().max().item() for p in params["resident"])
print(f"max |streamed - resident|       = {max_diff(params['streamed'], params['resident']):.3g}")
print(f"max |resident - resident again| = "
      f"{max_diff(params['resident'], params['resident again']):.3g} (noise floor; "
      f"largest |parameter| {scale:.3g})")
PY

# ~15 s: FLOPs counted on the meta device, throughput and per-run overhead measured
step estimate pebench estimate --method lora --tasks vtab --measure "$DEVICE" --backbone "$BACKBONE"

echo "=== total $SECONDS s; text in $OUT; failed: ${FAILED[*]:-none}"
exit "${#FAILED[@]}"
