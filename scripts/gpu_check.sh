#!/usr/bin/env bash
# The GPU figures of the hot-path issue in one run (about 10 minutes on one H100 or H200):
#   1. harness / bare-loop ratios (train, eval, merged eval) for lora and arc, micro ViT and
#      ViT-B/16 at 224 px, median [IQR] over interleaved rounds;
#   2. one short LoRA run, ViT-B/16 at 224 px, batch 64, bf16, on a generated VTAB-1k task at its
#      real sizes (dtd: 800/200/1000/1880) through the whole runner: img/s, MFU, data fraction,
#      peak device memory;
#   3. the projected time of one method's vtab1k-v2 sweep from a measured throughput;
#   4. a split streamed from the host (pinned, side-stream copies one batch ahead) against the
#      same split resident on the device: same parameters after one epoch, and both speeds.
# Usage: scripts/gpu_check.sh [OUT]   (needs a CUDA torch and timm in the environment)
set -euo pipefail
OUT=${1:-${OUT:-gpu-check}}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1
python -c "import torch, timm; assert torch.cuda.is_available(), 'no CUDA device'"
python -m pip install -q --no-deps --no-build-isolation -e . 2>/dev/null || true
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"

pebench bench --harness --methods lora,arc --device cuda --rounds 7 --steps 20 \
    | tee "$OUT/harness_micro.md"
pebench bench --harness --methods lora,arc --device cuda --backbone vit_base_patch16_224 \
    --image-size 224 --batch-size 64 --rounds 5 --steps 10 | tee "$OUT/harness_vitb16.md"

python - "$OUT" <<'PY'
import sys
from pathlib import Path

from tests.test_prepare import make_noah

out = Path(sys.argv[1])
make_noah(out / "raw", "dtd", {"train800": 800, "val200": 200, "test": 1880}, 47, 256)
PY
pebench prepare vtab/dtd --source noah --data-dir "$OUT/raw" --cache-dir "$OUT/cache"
cat > "$OUT/vitb16.toml" <<'TOML'
epochs = 3
warmup_epochs = 1
batch_size = 64
optimizer = "adamw"
lr_grid = [1e-3]
wd_grid = [1e-4]
image_size = 224
seeds = [0]
search_seed = 0
backbone = "vit_base_patch16_224"
weights = "random"
description = "GPU check: ViT-B/16 at 224 px, 3 epochs, one lr, one seed"
TOML
pebench run --method lora --tasks vtab/dtd --budget "$OUT/vitb16.toml" --data-dir "$OUT/cache" \
    --results "$OUT/results" --device cuda --quiet
python - "$OUT" <<'PY' | tee "$OUT/run.txt"
import sys

from pebench import results as R

for r in R.read_runs(sys.argv[1] + "/results"):
    print(
        f"{r['phase']}: {r['device']} train {r['train_images_per_s']:.0f} img/s, "
        f"MFU {r['mfu']:.1%}, data {r['data_time_s'] / r['train_time_s']:.1%} of train time, "
        f"eval {r['eval_images_per_s']:.0f} img/s, peak {r['peak_mem_bytes'] / 2**30:.2f} GiB "
        f"({r['peak_mem_kind']}), {r['status']}"
    )
PY
pebench estimate --method lora --tasks vtab --measure cuda | tee "$OUT/estimate.txt"

python - "$OUT" <<'PY' | tee "$OUT/streamed.txt"
import sys
import time

import torch

from pebench.backbones import create_backbone
from pebench.budget import get_budget
from pebench.data import place, run_splits
from pebench.datasets import get_task
from pebench.method import prepare
from pebench.methods import build_method
from pebench.train import train

out, dev = sys.argv[1], torch.device("cuda")
budget, task = get_budget(out + "/vitb16.toml"), get_task("vtab/dtd")
result = {}
for mode in ("streamed", "resident"):
    torch.manual_seed(0)
    bb = create_backbone(budget.backbone, "random", image_size=224, tag="random")
    prepare(bb.model, build_method("lora", {"dropout": 0.0}), task.num_classes)
    model = bb.model.to(dev)
    tr, _, _ = run_splits(task, "search", budget, bb.mean, bb.std, out + "/cache", 0)
    if mode == "resident":
        assert place([tr], dev, 0.5) == [True]
    t = time.perf_counter()
    stats = train(model, tr, budget, 1e-3, 1e-4, 0, dev, progress=False)
    torch.cuda.synchronize()
    wall = time.perf_counter() - t
    result[mode] = [p.detach().float().cpu() for p in model.parameters() if p.requires_grad]
    print(f"{mode}: {stats.train_images_per_s:.0f} img/s, data {stats.data_time_s:.2f} s of "
          f"{stats.train_time_s:.2f} s, loss {stats.train_loss:.6f}, wall {wall:.1f} s")
diff = max((a - b).abs().max().item() for a, b in zip(*result.values()))
print(f"max |streamed - resident| over trainable parameters: {diff:.3g}")
PY
