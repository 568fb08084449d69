"""The methods package: one module per method, each giving its stages with their kinds."""

from __future__ import annotations

import typing

import pytest

from fitnets.config import Config, make_config
from fitnets.distill import methods
from fitnets.distill.hint import HINTS
from fitnets.distill.stages import CLASSIFIER
from fitnets.errors import FitnetsError


def test_every_method_the_config_accepts_is_implemented_and_no_other():
    accepted = typing.get_args(typing.get_type_hints(Config)["method"])
    assert sorted(accepted) == sorted(methods.METHODS)
    for name, module in methods.METHODS.items():
        assert isinstance(module.LABEL, str) and isinstance(module.NEEDS_TEACHER, bool), name
    assert set(methods.COMPARED) <= set(methods.METHODS)
    with pytest.raises(FitnetsError, match="unknown method 'nope'; choose one of fitnet, kd"):
        methods.get("nope")


@pytest.mark.parametrize("command,method,teacher", [
    ("train", "fitnet", False), ("distill", "backprop", False), ("distill", "kd", True),
    ("distill", "fitnet", True), ("distill", "joint", True)])
def test_which_runs_load_a_teacher(command, method, teacher):
    assert methods.needs_teacher(command, make_config(None, [f"method={method}"])) is teacher


def test_the_plans_of_each_method_and_the_kinds_of_their_stages():
    import torch

    from fitnets.data.memory import Arrays, Data
    from fitnets.distill.teacher import Teacher
    from fitnets.models import build_model
    from fitnets.perf import FP32

    torch.manual_seed(0)
    x, y = torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))
    data = Data(Arrays(x, y), None, Arrays(x, y), 4, 8)

    def plans(command, method, *more):
        cfg = make_config(None, [f"method={method}", *more])
        teacher = Teacher(build_model("mnist_teacher"), cfg, FP32, x, 8)
        student = build_model("mnist_student")
        return methods.plan(command, methods.Setup(cfg, student, teacher, data, (1, 28, 28)))

    two_pairs = "hints.pairs=[[conv2, conv1], [conv4, conv2]]"
    got = {m: [p.label for p in plans("distill", m, two_pairs)] for m in methods.METHODS}
    assert got == {"fitnet": ["hints:0", "hints:1", "kd"], "kd": ["kd"],
                   "backprop": ["backprop"], "joint": ["joint"]}
    assert [p.label for p in plans("train", "fitnet")] == ["train"]
    built = [p.build() for p in plans("distill", "fitnet", two_pairs)]
    assert [s.kind for s in built] == [HINTS, HINTS, CLASSIFIER]
    assert [s.label for s in built] == ["hints:0", "hints:1", "kd"]
    assert [p.build().kind for p in plans("distill", "joint")] == [CLASSIFIER]
