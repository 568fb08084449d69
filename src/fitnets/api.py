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
from torch.utils.data import DataLoader, Dataset

from fitnets.config import make_config
from fitnets.errors import FitnetsError
from fitnets.models import load_run_model
from fitnets.run import Python, config_for_resume, default_run_dir, run


@dataclass
class Result:
    """What a finished run gives back."""

    summary: dict  # as in RUN_DIR/summary.json: test accuracy, stages, epochs, wall time ...
    run_dir: Path  # config.yaml, metrics.jsonl, checkpoints/, model.pt, summary.json
    model: nn.Module  # the trained network (yours, or rebuilt from model.pt), CPU, eval mode


def train(recipe: str | Path | None = None, *, overrides: list[str] = (),
          resume: str | Path | None = None, verbose: bool = True, **settings: Any) -> Result:
    """Train one network on labels (a teacher, or a baseline), like ``fitnets train``.

    ``model=`` may be your own ``nn.Module`` (trained in place), and ``train=`` / ``val=`` /
    ``test=`` your own ``torch.utils.data.Dataset``s or DataLoaders (see ``distill``).
    """
    return _run("train", recipe, list(overrides), resume, verbose, settings)


def distill(recipe: str | Path | None = None, *, overrides: list[str] = (),
            resume: str | Path | None = None, verbose: bool = True, **settings: Any) -> Result:
    """Train a student from a teacher with the configured method, like ``fitnets distill``
    (``method="fitnet"`` by default: hint stages, then KD).

    ``teacher=`` and ``student=`` may be your own ``nn.Module``s (the teacher trained, the
    student is trained in place; choose hint pairs by module name with
    ``hints={"pairs": [["layer2", "layer3"]]}``), and ``train=`` / ``val=`` / ``test=`` your
    own ``torch.utils.data.Dataset``s (items: (image tensor C x H x W, label)) or DataLoaders
    (their batch size and workers are used). Given as a dict, each of these names is the
    config section of the same name instead (``train={"epochs": 5}``).
    """
    return _run("distill", recipe, list(overrides), resume, verbose, settings)


_MODULES = ("student", "teacher", "model")
_DATA = ("train", "val", "test")


def _split_objects(settings: dict) -> tuple[dict, Python]:
    """Settings for the config, and the modules and datasets given as objects."""
    objects = {k: settings.pop(k) for k in list(settings)
               if (k in _MODULES and isinstance(settings[k], nn.Module))
               or (k in _DATA and isinstance(settings[k], (Dataset, DataLoader)))}
    data = {k: objects[k] for k in _DATA if k in objects} or None
    student = objects.get("student", objects.get("model"))
    for key, module in (("student", student), ("teacher", objects.get("teacher"))):
        if module is not None:  # recorded in config.yaml and summary.json
            section = "model" if key == "student" and "model" in objects else key
            settings.setdefault(section, {})
            if isinstance(settings[section], dict):
                settings[section].setdefault("name", f"python:{type(module).__name__}")
    return settings, Python(student=student, teacher=objects.get("teacher"), data=data)


def _run(command: str, recipe, overrides: list[str], resume, verbose: bool,
         settings: dict) -> Result:
    settings, python = _split_objects(dict(settings))
    if resume is not None:
        if recipe is not None or settings:
            raise FitnetsError("resume=RUN_DIR takes its config from the run directory; pass "
                               "no recipe or settings (only overrides=['device=...'], and "
                               "the same modules and datasets as the first time).")
        cfg, run_dir = config_for_resume(resume, overrides), Path(resume)
    else:
        cfg = make_config(recipe, overrides, settings=settings)
        run_dir = Path(cfg.out) if cfg.out else default_run_dir(command, recipe)
    summary = run(cfg, command, run_dir, resume=resume is not None, verbose=verbose,
                  python=python)
    model = python.student
    if model is None:
        model, _ = load_run_model(run_dir)
    return Result(summary, run_dir, model.cpu().eval())
