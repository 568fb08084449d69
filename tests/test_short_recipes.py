"""The short recipes learn (issue 23): on the real data in FITNETS_DATA each ends clearly
above chance, and the stall guard does not mark it: every short recipe is here (the CIFAR-10
teacher, the fast teacher and FitNet 1 in every run; FitNets 2, 3 and 4 with
FITNETS_LONG_TESTS=1).

CIFAR-10 comes from FITNETS_DATA's cifar10-jpeg.zip (or cifar-10-batches-py); CIFAR-100 and
SVHN short recipes run when their data is there too (no offline copy exists here, so CI
skips them and says so). Each short recipe trains on 2,000 images (500 more held out) for 2
epochs per stage of 63 steps (batch 32); on 1,000 test images a 10-class model that learned
nothing scores 10% +- 1 point (one standard deviation), so MARGIN below is over 4 of them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from fitnets.config import make_config
from fitnets.run import run

pytestmark = [pytest.mark.data, pytest.mark.slow, pytest.mark.learns]
RECIPES = Path(__file__).resolve().parent.parent / "recipes"
MARGIN = 0.05  # test accuracy at least chance + 5 points


def data_root(dataset: str) -> Path:
    root = os.environ.get("FITNETS_DATA")
    marks = {"cifar10": ("cifar10-jpeg.zip", "cifar-10-batches-py"),
             "cifar100": ("cifar-100-python", "cifar-100-python.tar.gz"),
             "svhn": ("svhn",)}[dataset]
    if not root or not any((Path(root) / m).exists() for m in marks):
        pytest.skip(f"{dataset} is not in FITNETS_DATA (looked for {', '.join(marks)}); no "
                    "offline copy of it exists here")
    return Path(root)


def train_short(recipe: str, command: str, out: Path, *extra: str) -> dict:
    dataset = recipe.split("-")[0]
    cfg = make_config(RECIPES / recipe, [f"data.root={data_root(dataset)}",
                                         "data.download=false", "device=cpu", *extra])
    return run(cfg, command, out, verbose=False)


def assert_learned(summary: dict, classes: int) -> None:
    assert summary["stalled"] is False, summary["stages"]
    assert summary["test_acc"] >= 1 / classes + MARGIN, summary["test_acc"]


LONG = "FITNETS_LONG_TESTS"  # =1: also the variants CI has no time for


def long_only(reason: str):
    return pytest.mark.skipif(os.environ.get(LONG) != "1",
                              reason=f"{reason}; {LONG}=1 runs it")


@pytest.fixture(scope="module", autouse=True)
def _the_machines_threads():
    """Trained as a user trains them, with the machine's threads (2 here), not the one a
    pytest-xdist worker gets: the results depend on the thread count, and on one thread
    the maxout teacher's short recipe ended at chance (2026-12-06: 13.8% validation, 14.0%
    test after its 2 epochs; 13.0% / 11.3% after 4), and a FitNet 4 test failed with it."""
    before = torch.get_num_threads()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cifar10_teacher(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("short") / "teacher"
    return out, train_short("cifar10-teacher-short.yaml", "train", out)


def test_the_short_cifar10_teacher_learns(cifar10_teacher):
    assert_learned(cifar10_teacher[1], 10)


# airbench's network and training (recipes/cifar10-teacher-fast*.yaml): 36.4% with its
# test-time augmentation (2026-12-06), in about 20-35 s. Not the FitNets' teacher here: at
# 2 epochs its soft targets at tau 3 are nearly uniform (KD's soft term stayed at ln 10), and
# FitNet 4 distilled from it ended at chance (12.2%).
def test_the_short_fast_cifar10_teacher_learns(tmp_path):
    summary = train_short("cifar10-teacher-fast-short.yaml", "train", tmp_path / "fast")
    assert summary["tta"] == "flip_shift"
    assert_learned(summary, 10)


# FitNet 1 in every CI run; FitNets 2, 3 and 4 pass too (2026-12-05: 36 s, 50 s and 102 s on
# 2 cores, next to 96 s for 4; 2026-12-06: FitNet 1 43 s, FitNet 4 107 s, AVX-512 BF16).
# FitNet 4, the deepest, was the one in CI until an AVX2 machine (fp32: no bf16) took 221 s
# for it and 154 s for the teacher, and CI 16.5 minutes (2026-12-07): CI must stay under 15.
# FITNETS_LONG_TESTS=1 runs all four.
@pytest.mark.parametrize("n", [
    1,
    pytest.param(2, marks=long_only("about 1 more minute on 2 cores")),
    pytest.param(3, marks=long_only("about 2 more minutes on 2 cores")),
    pytest.param(4, marks=long_only("about 2 more minutes on 2 AVX-512 cores, 4 on AVX2"))])
def test_each_short_cifar10_fitnet_learns_from_it(cifar10_teacher, tmp_path, n):
    summary = train_short(f"cifar10-fitnet{n}-short.yaml", "distill", tmp_path / "student",
                          f"teacher.weights={cifar10_teacher[0]}")
    assert summary["epochs"] == {"hints:0": 2, "kd": 2}
    assert_learned(summary, 10)


@pytest.mark.parametrize("teacher,student,classes", [
    ("cifar100-teacher-short.yaml", "cifar100-fitnet4-short.yaml", 100),
    ("svhn-teacher-short.yaml", "svhn-fitnet-short.yaml", 10)])
def test_the_other_short_teachers_and_fitnets_learn_where_their_data_is(tmp_path, teacher,
                                                                         student, classes):
    assert_learned(train_short(teacher, "train", tmp_path / "teacher"), classes)
    summary = train_short(student, "distill", tmp_path / "student",
                          f"teacher.weights={tmp_path / 'teacher'}")
    assert_learned(summary, classes)
