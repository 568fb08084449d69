"""fitnets: thin and deep student networks trained from a teacher with hints + KD.

Python entry points: ``fitnets.train(...)`` and ``fitnets.distill(...)`` (see fitnets.api)
run what the command line runs and return a ``fitnets.Result``; ``fitnets.load_exported(DIR)``
reads what ``fitnets export`` wrote back as (model, preprocessing); ``fitnets.generate(RUN_DIR,
prompt)`` continues a prompt with a language-model run. They are imported on first use, so
``import fitnets`` (and ``fitnets --help``) does not load torch.
"""

import importlib

from fitnets.errors import FitnetsError

__version__ = "0.1.0"
__all__ = ["FitnetsError", "Result", "__version__", "distill", "generate", "load_exported",
           "train"]


def __getattr__(name: str):
    if name in ("train", "Result"):
        return getattr(importlib.import_module("fitnets.api"), name)
    if name == "load_exported":  # an export folder back as (model, preprocessing)
        return importlib.import_module("fitnets.export").load_exported
    if name == "generate":  # text from a language-model run (fitnets.generation)
        return importlib.import_module("fitnets.generation").generate
    if name == "distill":  # the subpackage, which is callable: fitnets.distill(...)
        return importlib.import_module("fitnets.distill")
    raise AttributeError(f"module 'fitnets' has no attribute {name!r}")
