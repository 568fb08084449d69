"""The digits recipe the search tests search (scikit-learn's 8x8 digits, small nets)."""

from __future__ import annotations

import copy

import pytest

DIGITS = {
    "method": "fitnet", "device": "cpu", "seed": 0,
    "data": {"name": "digits", "val_size": 300, "batch_size": 32, "preprocess": "scale"},
    "model": {"name": "digits_teacher"}, "teacher": {"name": "digits_teacher"},
    "student": {"name": "digits_student"},
    "train": {"epochs": 40, "optim": {"name": "adam", "lr": 0.003}},
    "hints": {"stage": {"epochs": 15, "optim": {"name": "adam", "lr": 0.01}}},
    "kd": {"tau": 3.0, "lambda_init": 4.0, "lambda_start": 1, "lambda_saturate": 30,
           "lambda_final": 0.0},
}


@pytest.fixture(scope="session")
def digits() -> dict:
    """The digits recipe (copy it before changing a nested key)."""
    return copy.deepcopy(DIGITS)
