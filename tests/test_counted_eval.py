"""Plugins that cheat inside their own process gain nothing: what is evaluated is what is counted.

Each hostile method below is its own module of a fake installed distribution (so its import-time
patches reach only the processes that load it) and does one thing an attack on main (495fb34)
got away with there: full fine-tuning disguised by patching the optimizer and the guard, a
patched counter, state trained by hand outside the parameters (a tensor attribute, a dict, a
closure, a parametrization), a parameter added lazily and removed again, a backbone unfrozen by
a forward pre-hook, a label read from the evaluation's frame, and a scorer patched at import.
There each produced an ``ok`` row that reported fewer parameters than it learned, or an accuracy
its counted tensors do not earn (the label peek: 100 %). With ``--skip-checks`` (the checks are
another issue's defence) every one is now refused by name, or gets exactly the accuracy of the
tunable state it declared: an honest re-evaluation of the kept state (``--keep-state``, the
plugin's cheats switched off) gives the recorded predictions, and the count is that state's size.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
from fakedist import install

from pebench.store import RunStore

COMMON = textwrap.dedent('''
    import os

    import torch
    from torch import nn

    from pebench.method import Caps, Method
    from pebench.vit import PetlModule, blocks, set_slot

    HONEST = os.environ.get("HOSTILE_OFF") == "1"


    class Bias(PetlModule):
        def __init__(self, dim):
            super().__init__()
            self.bias = nn.Parameter(torch.zeros(dim))

        def forward(self, x):
            return x + self.bias + self.extra(x)

        def extra(self, x):
            return 0


    def first_block(model):
        return next(iter(blocks(model)))[1]


    def step(delta):
        """Train ``delta`` by hand: one SGD step on the gradient the core's backward left."""
        if delta.grad is not None:
            with torch.no_grad():
                delta -= 0.5 * delta.grad
            delta.grad = None


    class Base(Method):
        title = "A hostile plugin (test)"
        caps = Caps(identity_at_init=False)

        def attach(self, model):
            set_slot(first_block(model), "post", self.module(model))
            return model

        def module(self, model):
            return Bias(model.embed_dim)

        def expected_num_params(self, dims):
            return dims.embed_dim
''')

KINDS = {
    # full fine-tuning in disguise: everything trains, the guard is replaced by one that
    # re-freezes the backbone, so the state sent is the declared one
    "cheat_disguise": """
        import pebench.method as PM
        import pebench.train as T

        if not HONEST:
            _real = T.optimizer_and_schedule

            def unfrozen(model, *args, **kwargs):
                model.requires_grad_(True)
                return _real(model, *args, **kwargs)

            def verify(self, model, method):
                for name, p in model.named_parameters():
                    p.requires_grad_(name in self.trainable)

            T.optimizer_and_schedule = unfrozen
            PM.Guard.verify = verify


        class Cheat(Base):
            name = "cheat_disguise"
    """,
    # the counter reports 1 parameter
    "cheat_count": """
        import pebench.method as PM

        if not HONEST:
            _real = PM.ParamCount.as_dict
            PM.ParamCount.as_dict = lambda self: dict(_real(self), params_method=1)


        class Cheat(Base):
            name = "cheat_count"
    """,
    # a full-rank D x D delta trained by hand, held in a plain tensor attribute
    "cheat_attr": """
        class Hidden(Bias):
            def __init__(self, dim):
                super().__init__(dim)
                self.delta = torch.zeros(dim, dim, requires_grad=True)

            def extra(self, x):
                if self.training:
                    step(self.delta)
                return x @ self.delta


        class Cheat(Base):
            name = "cheat_attr"

            def module(self, model):
                return Hidden(model.embed_dim)
    """,
    # the same delta in a dict attribute
    "cheat_dict": """
        class Hidden(Bias):
            def __init__(self, dim):
                super().__init__(dim)
                self.store = {"delta": torch.zeros(dim, dim, requires_grad=True)}

            def extra(self, x):
                if self.training:
                    step(self.store["delta"])
                return x @ self.store["delta"]


        class Cheat(Base):
            name = "cheat_dict"

            def module(self, model):
                return Hidden(model.embed_dim)
    """,
    # the same delta in a closure: invisible to any structure check
    "cheat_closure": """
        def hidden(dim):
            delta = torch.zeros(dim, dim, requires_grad=True)

            def extra(module, x):
                if module.training:
                    step(delta)
                return x @ delta

            return extra


        class Hidden(Bias):
            def __init__(self, dim):
                super().__init__(dim)
                self.fn = hidden(dim) if not HONEST else (lambda module, x: 0)

            def extra(self, x):
                return self.fn(self, x)


        class Cheat(Base):
            name = "cheat_closure"

            def module(self, model):
                return Hidden(model.embed_dim)
    """,
    # a learned delta on a backbone weight through torch.nn.utils.parametrize
    "cheat_parametrize": """
        from torch.nn.utils import parametrize


        class Delta(nn.Module):
            def __init__(self, shape):
                super().__init__()
                self.delta = torch.zeros(shape, requires_grad=True)

            def forward(self, w):
                return w + self.delta


        class Cheat(Base):
            name = "cheat_parametrize"

            def attach(self, model):
                fc1 = first_block(model).mlp.fc1
                parametrize.register_parametrization(fc1, "weight", Delta(fc1.weight.shape))
                return super().attach(model)
    """,
    # a parameter added at the first training step, trained by hand, removed again when the
    # model is first evaluated (its learned values still used)
    "cheat_lazy": """
        class Lazy(Bias):
            learned = None

            def extra(self, x):
                if self.training:
                    if "late" not in self._parameters:
                        self.late = nn.Parameter(torch.zeros(x.shape[-1]))
                    step(self.late)
                    return self.late
                if "late" in self._parameters:
                    Lazy.learned = self._parameters.pop("late").detach()
                return 0 if Lazy.learned is None else Lazy.learned


        class Cheat(Base):
            name = "cheat_lazy"

            def module(self, model):
                return Lazy(model.embed_dim)
    """,
    # the backbone unfrozen by a forward pre-hook while training, its flags restored before
    # anything is evaluated (so a guard after evaluation sees the trainable set it expects)
    "cheat_prehook": """
        class Cheat(Base):
            name = "cheat_prehook"

            def attach(self, model):
                model = super().attach(model)
                frozen = []

                def unfreeze(module, args):
                    if not frozen:  # the first forward: prepare has set the trainable set
                        frozen.extend(p for p in module.parameters() if not p.requires_grad)
                    for p in frozen:
                        p.requires_grad_(module.training)

                model.register_forward_pre_hook(unfreeze)
                return model
    """,
    # the head's output is replaced by the label read from pebench.train.evaluate's frame
    "cheat_peek": """
        import inspect
        import types


        def labels():
            for info in inspect.stack():
                if info.function == "evaluate" and "y" in info.frame.f_locals:
                    return info.frame.f_locals["y"]
            return None


        class Cheat(Base):
            name = "cheat_peek"

            def attach(self, model):
                real = model.forward_head

                def forward_head(self, x, pre_logits=False):
                    out = real(x, pre_logits=pre_logits)
                    y = None if self.training or HONEST else labels()
                    if y is None or pre_logits:
                        return out
                    return out + 1e4 * torch.nn.functional.one_hot(y, out.shape[-1])

                model.forward_head = types.MethodType(forward_head, model)
                return super().attach(model)
    """,
    # the scorer patched at import: every prediction counts as correct
    "cheat_scorer": """
        import pebench.record as REC
        import pebench.train as T

        if not HONEST:
            _make = REC.make

            def make(run_id, phase, pred, correct, epochs=()):
                return _make(run_id, phase, pred, [True] * len(pred), epochs)

            T.Evaluation.top1 = property(lambda self: 1.0)
            T.Evaluation.n_correct = property(lambda self: self.n)
            REC.make = make


        class Cheat(Base):
            name = "cheat_scorer"
    """,
}
#: the runs each kind must fail, and the words their rows' errors must contain
REFUSED = {
    "cheat_count": "reported {'params_method': 1",
    "cheat_attr": "tensors that require grad outside parameters and buffers",
    "cheat_dict": "tensors that require grad outside parameters and buffers",
    "cheat_parametrize": "parametrizations on",
    "cheat_lazy": "renamed, added or removed tensors",
    "cheat_prehook": "hooks on ['<model>']",
}
#: the kinds whose evaluation was meant to see labels: it sees none (every label reads 0)
BLIND = ("cheat_peek", "cheat_scorer")
SMOKE = ["--tasks", "demo/shapes", "--budget", "demo-smoke", "--weights", "random", "--seeds", "0"]

#: evaluates a kept state honestly (HOSTILE_OFF=1): the model the method's config builds, the
#: state loaded, the labelled split scored; prints {run_id: predictions}
REEVALUATE = textwrap.dedent("""
    import json, sys
    import torch
    from pebench.data import run_split
    from pebench.predictor import load_state
    from pebench.run import RunOptions, build_model
    from pebench.store import RunStore
    from pebench.sweep.plan import plan_sweep
    from pebench.train import evaluate

    store = RunStore(sys.argv[1])
    out = {}
    for row in store.rows():
        path = store.state_path(row["run_id"])
        if row["status"] != "ok" or not path.exists():
            continue
        sweep = plan_sweep(row["method"], tasks="demo/shapes", budget="demo-smoke",
                           weights="random", checks=False, options=RunOptions(device="cpu"),
                           results_dir=sys.argv[1] + "-plan")
        spec = sweep.spec(row)
        budget, task = spec.resolved()
        bb = build_model(spec, budget, task.num_classes, {})
        load_state(bb.model, path.read_bytes(), spec.method)
        split, _ = run_split(task, spec.phase, budget, bb.mean, bb.std, None, spec.seed, False)
        out[row["run_id"]] = evaluate(bb.model, split, budget, torch.device("cpu")).pred.tolist()
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fake installed distribution with one module per hostile method."""
    root = tmp_path_factory.mktemp("cheats")
    eps = {name: f"{name}:Cheat" for name in KINDS}
    modules = {name: COMMON + "\n\n" + textwrap.dedent(body) for name, body in KINDS.items()}
    return install(root, "pebench-cheats", eps, modules)


def _env(installed, **extra):
    return dict(os.environ, PYTHONPATH=str(installed), HF_HUB_OFFLINE="1", **extra)


@pytest.fixture(scope="module")
def swept(installed, tmp_path_factory):
    """Every hostile method run once, checks skipped, states kept."""
    results = tmp_path_factory.mktemp("swept") / "results"
    cmd = [sys.executable, "-m", "pebench.cli", "run", "--method", ",".join(KINDS), *SMOKE,
           "--results", str(results), "--skip-checks", "--keep-state", "--quiet"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, env=_env(installed), timeout=900)
    rows = RunStore(results).rows()
    assert rows, out.stdout + out.stderr
    return results, rows


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(REFUSED))
def test_a_cheat_the_structure_sees_fails_its_runs_naming_it(swept, kind):
    _, rows = swept
    search = [r for r in rows if r["method"] == kind and r["phase"] == "search"]
    assert len(search) == 2
    for row in search:
        assert row["status"] == "failed", (kind, row["status"])
        assert REFUSED[kind] in row["error"], row["error"][:500]
    (final,) = [r for r in rows if r["method"] == kind and r["phase"] == "final"]
    assert final["status"] == "blocked"  # no trial to select: the final never runs


@pytest.mark.slow
@pytest.mark.parametrize("kind", BLIND)
def test_evaluation_never_sees_a_label(swept, kind):
    """On main the label peek and the patched scorer scored 100 % on val and test."""
    results, rows = swept
    store = RunStore(results)
    mine = [r for r in rows if r["method"] == kind]
    assert mine and all(r["status"] == "ok" for r in mine), [r["error"][:300] for r in mine]
    for row in mine:
        score = row["val_top1"] if row["phase"] == "search" else row["test_top1"]
        assert score < 0.6, (row["phase"], score)
        if kind == "cheat_peek":  # it found the evaluation's labels: all 0
            assert set(store.load_record(row).pred) == {0}


@pytest.mark.slow
def test_every_ok_row_is_its_declared_state_honestly_evaluated(installed, swept):
    """The disguised full fine-tuning and the closure-held delta: on main the disguise scored
    what `full` scores; here the recorded predictions are exactly those of the state the run
    declared, evaluated by the method with its cheats off, and the count is that state's."""
    from safetensors.numpy import load

    results, rows = swept
    store = RunStore(results)
    honest = subprocess.run(
        [sys.executable, "-c", REEVALUATE, str(results)],
        capture_output=True, text=True, env=_env(installed, HOSTILE_OFF="1"), timeout=600,
    )  # fmt: skip
    assert honest.returncode == 0, honest.stderr[-3000:]
    preds = json.loads(honest.stdout.splitlines()[-1])
    checked = 0
    for row in rows:
        if row["status"] != "ok" or row["method"] in BLIND:
            continue
        assert row["method"] in ("cheat_disguise", "cheat_closure"), row["method"]
        assert list(store.load_record(row).pred) == preds[row["run_id"]], row["run_id"]
        state = load(store.state_path(row["run_id"]).read_bytes())
        counted = sum(t.size for n, t in state.items() if not n.startswith("head."))
        assert row["params_method"] == counted == 64  # the declared bias only (embed_dim)
        assert row["checkpoint_bytes"] == store.state_path(row["run_id"]).stat().st_size
        checked += 1
    assert checked == 6  # both kinds: 2 search trials and 1 final each


# ------------------------------------------------------- what a stage sends is only data --
def _state(**tensors):
    import numpy as np
    from safetensors.numpy import save

    return save({k: np.zeros(shape, np.float32) for k, shape in tensors.items()})


def test_the_state_is_counted_with_the_backbones_head_and_nothing_else():
    from pebench.method import ContractError
    from pebench.supervise import count_state

    heads = {"head.weight": (4, 8), "head.bias": (4,)}
    state = _state(**{"head.weight": (4, 8), "head.bias": (4,), "blocks.0.a": (8, 2)})
    counted = count_state(state, heads, "m")
    assert (counted.method, counted.head, counted.nbytes) == (16, 36, len(state))
    # a method tensor named like the head is the method's; the head itself must be there
    state = _state(**{"head.weight": (4, 8), "head.bias": (4,), "head.extra": (3,)})
    assert count_state(state, heads, "m").method == 3
    for bad in (
        _state(**{"head.weight": (4, 8)}),
        _state(**{"head.weight": (4, 9), "head.bias": (4,)}),
    ):
        with pytest.raises(ContractError, match="the tunable state's head is"):
            count_state(bad, heads, "m")
    with pytest.raises(ContractError, match="unreadable tunable state"):
        count_state(b"\x00" * 16, heads, "m")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"extra": 1}, "unexpected fields"),
        ({"params_method": "64"}, "params_method='64'"),
        ({"params_method": True}, "params_method=True"),
        ({"train_loss": [1.0]}, r"train_loss=\[1.0\]: not a <class 'float'>"),
    ],
)
def test_a_training_report_is_checked_field_by_field(change, message):
    from pebench.run import StageError
    from pebench.supervise import TRAINED, trained_fields

    good = {k: kind() if kind is not bool else False for k, kind in TRAINED.items()}
    assert trained_fields(good) == good
    with pytest.raises(StageError, match=message):
        trained_fields(dict(good, **change))


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (None, "sent nothing for 3 examples"),
        (b"\x00" * 16, "sent 2 values for 3 examples"),
        ((5).to_bytes(8, "little") * 3, "classes outside 0..4"),
        ((-1).to_bytes(8, "little", signed=True) * 3, "classes outside 0..4"),
    ],
)
def test_predictions_are_n_classes_or_the_run_fails(block, message):
    from pebench.run import StageError
    from pebench.supervise import predictions

    assert predictions((4).to_bytes(8, "little") * 3, 3, 5).tolist() == [4, 4, 4]
    with pytest.raises(StageError, match=message):
        predictions(block, 3, 5)
