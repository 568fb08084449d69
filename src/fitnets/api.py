"""The Python entry point: ``fitnets.trainer(...)`` and ``fitnets.distill(...)``.

They run exactly what ``fitnets train`` / ``fitnets distill`` run (the same config, stages,
checkpoints, resume and run directory) and return the result::

    import fitnets

    teacher = fitnets.trainer("recipes/mnist-teacher.yaml", train={"epochs": 5})
    student = fitnets.distill("recipes/mnist-fitnet.yaml",
                              teacher={"weights": teacher.run_dir}, out="runs/student")
    print(student.summary["test_acc"], student.model)

Settings are keyword arguments nested as in a recipe (``train={"epochs": 5}``, ``method="kd"``)
and override the recipe; ``overrides=["train.optim.lr=0.01"]`` takes the command line's
``key=value`` form and comes last. ``resume=RUN_DIR`` continues a killed run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from fitnets.config import make_config
from fitnets.errors import FitnetsError
from fitnets.models import load_run_model
from fitnets.run import config_for_resume, default_run_dir, run


@dataclass
class Result:
    """What a finished run gives back."""

    summary: dict  # as in RUN_DIR/summary.json: test accuracy, stages, epochs, wall time ...
    run_dir: Path  # config.yaml, metrics.jsonl, checkpoints/, model.pt, summary.json
    model: nn.Module  # the trained network (from model.pt), on the CPU, in eval mode


def train(recipe: str | Path | None = None, *, overrides: list[str] = (),
          resume: str | Path | None = None, verbose: bool = True, **settings: Any) -> Result:
    """Train one network on labels (a teacher, or a baseline), like ``fitnets train``."""
    return _run("train", recipe, list(overrides), resume, verbose, settings)


def distill(recipe: str | Path | None = None, *, overrides: list[str] = (),
            resume: str | Path | None = None, verbose: bool = True, **settings: Any) -> Result:
    """Train a student from a teacher with the configured method, like ``fitnets distill``
    (``method="fitnet"`` by default: hint stages, then KD)."""
    return _run("distill", recipe, list(overrides), resume, verbose, settings)


def _run(command: str, recipe, overrides: list[str], resume, verbose: bool,
         settings: dict) -> Result:
    if resume is not None:
        if recipe is not None or settings:
            raise FitnetsError("resume=RUN_DIR takes its config from the run directory; pass "
                               "no recipe or settings (only overrides=['device=...']).")
        cfg, run_dir = config_for_resume(resume, overrides), Path(resume)
    else:
        cfg = make_config(recipe, overrides, settings=settings)
        run_dir = Path(cfg.out) if cfg.out else default_run_dir(command, recipe)
    summary = run(cfg, command, run_dir, resume=resume is not None, verbose=verbose)
    model, _ = load_run_model(run_dir)
    return Result(summary, run_dir, model)

