"""fitnets: thin and deep student networks trained from a teacher with hints + KD.

Python entry points: ``fitnets.train(...)`` and ``fitnets.distill(...)`` (see fitnets.api)
run what the command line runs and return a ``fitnets.Result``. They are imported on first
use, so ``import fitnets`` (and ``fitnets --help``) does not load torch.
"""

import sys
import types

from fitnets.errors import FitnetsError

__version__ = "0.1.0"
__all__ = ["FitnetsError", "Result", "__version__", "distill", "train"]


class _Package(types.ModuleType):
    """``fitnets.distill`` is the entry-point function, although ``fitnets/distill/`` is
    also a subpackage: importing a submodule makes the import system bind the subpackage
    as an attribute of its parent, which this class ignores (``from fitnets.distill.losses
    import ...`` and ``sys.modules`` are unaffected)."""

    @property
    def distill(self):
        from fitnets.api import distill

        return distill

    @distill.setter
    def distill(self, value) -> None:
        pass  # the subpackage fitnets.distill, bound by the import system

    @property
    def train(self):
        from fitnets.api import train

        return train

    @property
    def Result(self):  # noqa: N802 - a class
        from fitnets.api import Result

        return Result


sys.modules[__name__].__class__ = _Package
