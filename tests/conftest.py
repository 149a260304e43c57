import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

from pebench._compat import ensure_torchvision

ensure_torchvision()  # before any test module imports timm (PyPI torchvision on CPU torch)

import torch  # noqa: E402

# Tests run tiny models: one thread is faster than two on a shared 2-core machine, and makes
# float reductions independent of the core count. Runs started by the runner set their own.
torch.set_num_threads(1)
