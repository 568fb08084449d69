"""The authors' initialisation of the stage-1 regressor (``hints.regressor_init=authors``).

Their ``generateConvRegressor`` (adri-romsor/FitNets scripts/fitnets_training.py, lines
31-33 and 36-44) builds a MaxoutConvC01B with ``irange=0.05`` (weights ~ U(-0.05, 0.05),
pylearn2's zero biases) and ``max_kernel_norm=0.9``; the fully connected one (lines 75-79)
uses the same irange and ``max_col_norm=0.9``. The max-norm is a recipe key: our stage-1
module names the regressor ``regressor.*``, which patterns such as ``conv*weight`` do not
match, so the paper recipes add ``"regressor.*weight": 0.9`` to ``hints.stage.optim.max_norm``.
"""

from __future__ import annotations

from torch import nn

from fitnets.models.maxout import paper_init_

AUTHORS_IRANGE = 0.05


def init_regressor_(regressor: nn.Module, kind: str = "torch") -> nn.Module:
    """``torch``: leave PyTorch's default initialisation; ``authors``: every conv/linear
    weight ~ U(-0.05, 0.05), biases zero. In place; returns ``regressor``."""
    if kind == "authors":
        paper_init_(regressor, AUTHORS_IRANGE)
    elif kind != "torch":
        raise ValueError(f"regressor init must be 'torch' or 'authors', got {kind!r}")
    return regressor
