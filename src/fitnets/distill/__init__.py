"""Distillation: losses, regressors, layer taps, the teacher, stage builders and methods.

The package is also the entry point ``fitnets.distill(...)``: calling it runs
``fitnets.api.distill`` (a student from a teacher, like ``fitnets distill``).
"""

import sys
import types


class _Callable(types.ModuleType):
    def __call__(self, *args, **kwargs):
        """fitnets.api.distill: train a student from a teacher (see its docstring)."""
        from fitnets.api import distill

        return distill(*args, **kwargs)


sys.modules[__name__].__class__ = _Callable
