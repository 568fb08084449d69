"""fitnets: thin and deep student networks trained from a teacher with hints + KD.

Python entry points: ``fitnets.train(...)`` and ``fitnets.distill(...)`` (see fitnets.api)
run what the command line runs and return a ``fitnets.Result``. They are imported on first
use, so ``import fitnets`` (and ``fitnets --help``) does not load torch.
"""

import importlib

from fitnets.errors import FitnetsError

__version__ = "0.1.0"
__all__ = ["FitnetsError", "Result", "__version__", "distill", "train"]


def __getattr__(name: str):
    if name in ("train", "Result"):
        return getattr(importlib.import_module("fitnets.api"), name)
    if name == "distill":  # the subpackage, which is callable: fitnets.distill(...)
        return importlib.import_module("fitnets.distill")
    raise AttributeError(f"module 'fitnets' has no attribute {name!r}")
