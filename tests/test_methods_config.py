"""Declarative Config constraints (``pebench.method.option``), checked in one place."""

import dataclasses
from dataclasses import dataclass
from typing import Literal

import pytest

from pebench.config import (
    Constraint,
    MethodConfigError,
    at_least_one,
    check_config,
    dropout_rate,
    field_constraints,
    option,
)
from pebench.method import Method
from pebench.methods import BUILTIN, get_method_class


@pytest.mark.parametrize(
    ("rule", "text"),
    [
        (Constraint(ge=1), ">= 1"),
        (Constraint(ge=0.0, lt=1.0), "in [0, 1)"),
        (Constraint(gt=0, le=2.5), "in (0, 2.5]"),
        (Constraint(lt=3), "< 3"),
        (Constraint(choices=("a", "b")), "one of 'a', 'b'"),
    ],
)
def test_constraint_describes_what_is_allowed(rule, text):
    assert rule.describe() == text


def test_constraint_rejects_out_of_range_nan_and_wrong_types():
    rate = Constraint(ge=0.0, lt=1.0)
    assert rate.allows(0.0) and rate.allows(0.5)
    assert not any(rate.allows(v) for v in (1.0, -0.1, float("nan"), "0.5"))


class Toy(Method):
    name = "toy"

    @dataclass(frozen=True)
    class Config(Method.Config):
        r: int = at_least_one(4)
        dropout: float = dropout_rate(0.1)
        act: str = option("gelu", choices=("gelu", "relu"))
        mode: Literal["a", "b"] = "a"


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"r": 0}, "r must be >= 1, got 0"),
        ({"dropout": 1.0}, "dropout must be in [0, 1), got 1.0"),
        ({"act": "swish"}, "act must be one of 'gelu', 'relu', got 'swish'"),
        ({"mode": "c"}, "mode must be one of 'a', 'b', got 'c'"),
    ],
)
def test_message_names_key_value_and_allowed(bad, message):
    with pytest.raises(MethodConfigError) as direct:
        Toy.Config(**bad)
    assert str(direct.value) == message
    with pytest.raises(MethodConfigError) as built:
        Toy.build(overrides=bad)
    key = next(iter(bad))
    if key != "mode":
        assert str(built.value) == f"invalid config for method 'toy': {message}"
    else:  # a string for a Literal field fails to parse first
        assert str(built.value) == "bad value 'c' for config key 'mode': expected 'a' | 'b'"


def test_config_not_derived_from_method_config_is_checked_by_the_method():
    @dataclass(frozen=True)
    class Loose:
        r: int = at_least_one(2)

    class Plugin(Method):
        name = "plugin"
        Config = Loose

    assert Plugin.build(overrides={"r": "3"}).config.r == 3
    with pytest.raises(MethodConfigError, match="invalid config for method 'plugin': r must be"):
        Plugin.build(overrides={"r": "0"})
    with pytest.raises(MethodConfigError, match="r must be >= 1, got -1"):
        Plugin(Loose(r=-1))


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_builtin_configs_use_the_shared_checks(name):
    cls = get_method_class(name)
    assert issubclass(cls.Config, Method.Config)
    check_config(cls.Config())  # defaults are allowed
    rules = field_constraints(cls.Config)
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    for key in ("r", "n", "bottleneck", "num_tokens", "groups"):
        if key in fields:
            assert rules[key] == Constraint(ge=1), (name, key)
    if "dropout" in fields:
        assert rules["dropout"] == Constraint(ge=0.0, lt=1.0), name
