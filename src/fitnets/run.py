"""A run: its directory, data, models, the list of stages, resume, and the summary.

``train(cfg)`` trains one network on labels; ``distill(cfg)`` runs the chosen method:
fitnet = one hint stage per (guided, hint) pair, each starting from the previous one's
student, then KD; kd = KD only; backprop = labels only. A checkpoint records the stage index
and the loop state, so ``--resume`` continues in the right stage.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fitnets import distributed
from fitnets.checkpoint import Checkpoints, atomic_write, load_weights, save_weights
from fitnets.config import Config, ModelConfig, dump_yaml, make_config
from fitnets.distill.stages import (
    hint_stage,
    joint_stage,
    kd_stage,
    label_stage,
    params_reaching,
)
from fitnets.distill.taps import run_to
from fitnets.distill.teacher_cache import build_teacher_cache, cache_mode
from fitnets.errors import FitnetsError
from fitnets.perf import resolve_perf
from fitnets.train import Arrays, Data, RunState, evaluate, fit

# --------------------------------------------------------------------------- set-up


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise FitnetsError(f"device '{name}' was asked for but CUDA is not available; use cpu.")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class Prepared:
    data: Data
    input_shape: tuple
    num_classes: int
    preprocess: object  # fitnets.data.preprocess.Preprocess
    dataset: str


def prepare_data(cfg: Config, device: torch.device) -> Prepared:
    """Load the dataset, fit the preprocessing on its training split, move it to ``device``.

    The preprocessing is applied once to every split (as the authors preprocessed before
    augmenting); augmentation then works on whole batches on the device.
    """
    from fitnets.data import load_dataset
    from fitnets.data.augment import augment_with_flips
    from fitnets.data.preprocess import fit_preprocess

    d = cfg.data
    ds = load_dataset(d.name, d.root, val_size=d.val_size, train_limit=d.train_limit,
                      test_limit=d.test_limit, download=d.download, path=d.path)
    pre = fit_preprocess(d.preprocess, ds.train.x)

    def arrays(split) -> Arrays | None:
        if split is None or len(split.y) == 0:
            return None
        xs = [pre(split.x[i:i + 4096]) for i in range(0, len(split.y), 4096)]
        return Arrays(torch.cat(xs).to(device), split.y.to(device))

    aug = None
    if d.augment_pad or d.augment_flip:
        def aug(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
            return augment_with_flips(x, g, pad=d.augment_pad, flip=d.augment_flip)

    data = Data(train=arrays(ds.train), val=arrays(ds.val), test=arrays(ds.test),
                batch_size=d.batch_size, eval_batch_size=d.eval_batch_size, augment=aug)
    return Prepared(data, tuple(ds.input_shape), ds.num_classes, pre, ds.name)


def build_net(mcfg: ModelConfig, prepared: Prepared, device: torch.device) -> nn.Module:
    from fitnets.models import MaxoutOptions, build_model

    model = build_model(mcfg.name, num_classes=prepared.num_classes,
                        in_channels=prepared.input_shape[0], batchnorm=mcfg.batchnorm,
                        maxout=MaxoutOptions.of(mcfg))
    expected = getattr(model, "input_shape", None)
    if expected is not None and tuple(expected) != tuple(prepared.input_shape):
        raise FitnetsError(
            f"model '{mcfg.name}' is built for inputs {tuple(expected)} but dataset "
            f"'{prepared.dataset}' gives {tuple(prepared.input_shape)}; pick a model for "
            "this dataset (`fitnets layers --list`)."
        )
    if mcfg.init == "torch":
        for m in model.modules():
            if hasattr(m, "reset_parameters") and m is not model:
                m.reset_parameters()
    return model.to(device)


def load_teacher(mcfg: ModelConfig, prepared: Prepared, device: torch.device) -> nn.Module:
    if not mcfg.weights:
        raise FitnetsError(
            "the teacher needs trained weights: set teacher.weights=RUN_DIR (a finished "
            "`fitnets train` run) or a state-dict file. Train one with e.g. "
            "`fitnets train recipes/mnist-teacher.yaml`."
        )
    teacher = build_net(mcfg, prepared, device)
    load_into(teacher, mcfg.weights, mcfg.name, prepared)
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


def load_into(model: nn.Module, weights: str, name: str, prepared: Prepared | None) -> None:
    path = Path(weights)
    if path.is_dir():
        path = path / "model.pt"
    blob = load_weights(path)
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else blob
    if isinstance(blob, dict) and "preprocess" in blob and prepared is not None:
        kind = blob["preprocess"].get("kind")
        if kind is not None and kind != prepared.preprocess.kind:
            raise FitnetsError(
                f"'{path}' was trained with preprocess '{kind}' but this run uses "
                f"'{prepared.preprocess.kind}': set data.preprocess={kind}."
            )
    if not isinstance(state, dict):
        raise FitnetsError(f"'{path}' does not hold a state dict.")
    state = _strip_prefix(state)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
              for k, v in state.items()
              if k in own and hasattr(v, "shape") and tuple(v.shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        raise FitnetsError(
            f"the weights in '{path}' do not fit model '{name}'. "
            f"Missing keys: {missing[:10] or 'none'}. "
            f"Unexpected keys: {unexpected[:10] or 'none'}. "
            f"Shape mismatches: {shapes[:5] or 'none'}. Check the model name "
            "(and batchnorm) against the run that produced the weights."
        )
    model.load_state_dict(state)


def _strip_prefix(state: dict) -> dict:
    # DDP and torch.compile wrap names; accept their state dicts unchanged
    for prefix in ("module.", "_orig_mod."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


# --------------------------------------------------------------------------- run directory


class RunDir:
    """Creates (or reopens for --resume) a run directory and holds its lock."""

    def __init__(self, path: Path, resume: bool):
        self.path = Path(path)
        if resume:
            if not (self.path / "config.yaml").is_file():
                raise FitnetsError(f"cannot resume: '{self.path}' is not a run directory "
                                   "(no config.yaml).")
        elif (self.path / "config.yaml").exists():
            raise FitnetsError(
                f"run directory '{self.path}' already holds a run. Resume it with "
                f"--resume {self.path}, or choose another out=DIR."
            )
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / f".write-test{os.getpid()}"
            probe.write_bytes(b"x" * 1024)
            probe.unlink()
        except OSError as e:
            raise FitnetsError(f"cannot write to run directory '{self.path}': {e.strerror}. "
                               "Choose a writable out=DIR.") from None
        self._lock = open(self.path / ".lock", "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise FitnetsError(f"another fitnets process is using '{self.path}' (it holds "
                               "the lock); wait for it or choose another directory.") from None

    def close(self) -> None:
        self._lock.close()


def default_run_dir(command: str, recipe: str | None) -> Path:
    stem = Path(recipe).stem if recipe else command
    return Path("runs") / f"{stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def config_for_resume(run_dir: str | Path, overrides: list[str]) -> Config:
    allowed = ("device=", "data.root=", "dist.backend=")
    bad = [o for o in overrides if not o.startswith(allowed)]
    if bad:
        raise FitnetsError(f"with --resume only device=, data.root= and dist.backend= may be "
                           f"changed (the run must continue as it started); got {bad}.")
    if not (Path(run_dir) / "config.yaml").is_file():
        raise FitnetsError(f"cannot resume: '{run_dir}' is not a run directory (no config.yaml).")
    return make_config(Path(run_dir) / "config.yaml", overrides)


# --------------------------------------------------------------------------- the run


def run(cfg: Config, command: str, run_dir: Path, resume: bool = False,
        verbose: bool = True) -> dict:
    """Train (command="train") or distill; returns the summary (also in summary.json).

    Under torchrun (WORLD_SIZE > 1) every process calls this; see fitnets.distributed.
    """
    dist = distributed.setup(cfg.dist, resolve_device(cfg.device))
    try:
        run_dir, resume = _agree_on_run_dir(Path(run_dir), resume, dist)
        rd = RunDir(run_dir, resume) if dist.is_main else None  # rank 0 alone writes
        try:
            summary = _run(cfg, command, run_dir, resume, verbose and dist.is_main, dist)
        finally:
            if rd is not None:
                rd.close()
        dist.barrier()  # the other ranks wait for rank 0's model.pt and summary.json
        return summary
    finally:
        dist.close()


def _agree_on_run_dir(run_dir: Path, resume: bool, dist) -> tuple[Path, bool]:
    """Rank 0's run directory for all; after an elastic restart, resume it automatically."""
    if (dist.is_main and not resume and distributed.restart_count() > 0
            and (run_dir / "config.yaml").is_file()):
        print(f"elastic restart {distributed.restart_count()}: resuming {run_dir}")
        resume = True
    run_dir, resume = dist.broadcast((str(run_dir), resume))
    return Path(run_dir), resume


def _run(cfg: Config, command: str, run_dir: Path, resume: bool, verbose: bool,
         dist: distributed.Dist) -> dict:
    ckpts = Checkpoints(run_dir)
    # rank 0 reads the checkpoint and sends it: every rank continues from the same one
    state = dist.broadcast(_checked(ckpts.load_latest(), ckpts.dir)
                           if resume and dist.is_main else None)
    if dist.is_main and not resume:
        atomic_write(run_dir / "config.yaml", dump_yaml(cfg).encode())
    if dist.is_main and state is None:  # fresh (also --resume of a run killed before a save)
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    distributed.check_batch(cfg, dist)
    cfg = distributed.scale_lr(cfg, dist)
    device = dist.device
    perf = resolve_perf(cfg.perf, device)
    seed_everything(cfg.seed)
    prepared = prepare_data(cfg, device)
    _set_layout(prepared.data, perf)
    prepared.data.dist = dist
    say = print if verbose else (lambda *a, **k: None)
    if dist.enabled:
        say(distributed.describe(cfg, dist, command))

    if command == "train":
        student = build_net(cfg.model, prepared, device)
        teacher = None
        plan = ["train"]
    else:
        student = build_net(cfg.student, prepared, device)
        teacher = None if cfg.method == "backprop" else load_teacher(cfg.teacher, prepared, device)
        if teacher is not None:
            perf.prepare(teacher)
        pairs = hint_pairs(cfg, student, teacher) if cfg.method in ("fitnet", "joint") else []
        plan = [f"hints:{i}" for i in range(len(pairs))] + [
            "backprop" if cfg.method == "backprop" else "kd"]
        if cfg.method == "joint":  # joint mode: one stage, CE + beta * hints (see stages.py)
            plan = ["joint"]
    say(f"run directory: {run_dir}  device: {device}  stages: {' -> '.join(plan)}")
    say(f"speed: {perf.describe()}, teacher cache "
        f"{cache_mode(cfg.perf.teacher_cache, cfg.data.augment_pad) or 'off'}"
        + (" (off: translations change the teacher's inputs)"
           if teacher is not None and cfg.perf.teacher_cache == "auto" and cfg.data.augment_pad
           else ""))
    if perf.compile:
        student.compile()
        if teacher is not None:
            teacher.compile()

    generator = torch.Generator().manual_seed(cfg.seed)
    history: dict = {"stages": [], "elapsed": 0.0}
    first_stage = 0
    loop_state = None
    run_state = RunState(run_dir, generator, save=lambda s: None, verbose=verbose, perf=perf,
                         tensorboard=cfg.tensorboard, dist=dist)
    if state is not None:
        first_stage = state["stage_index"]
        loop_state = state["loop"]
        student.load_state_dict(state["student"])
        generator.set_state(state["rng"]["generator"])
        history = json.loads(state["history"])
        run_state.truncate_log(state["log_lines"])
        say(f"resuming at stage {plan[first_stage] if first_stage < len(plan) else 'end'}"
            f", epoch {loop_state['epoch'] if loop_state else 0}")
    t_start = time.perf_counter() - history["elapsed"]
    pretrained: list[nn.Parameter] = []
    saves = 0

    def checkpoint(index: int, loop: dict | None) -> None:
        nonlocal saves
        history["elapsed"] = time.perf_counter() - t_start
        if dist.is_main:
            ckpts.save({"stage_index": index, "loop": loop, "student": student.state_dict(),
                        "rng": {"torch": torch.get_rng_state(),
                                "generator": generator.get_state()},
                        "log_lines": run_state.log_lines(), "history": json.dumps(history)})
        saves += 1
        distributed.test_hook_after_checkpoint(dist, saves)

    for index, name in enumerate(plan):
        if index < first_stage:
            if name.startswith("hints"):  # layers pre-trained by an earlier hint stage
                pretrained += _stage1_params(student, pairs[int(name.split(":")[1])][0], prepared)
            continue
        resuming_here = state is not None and index == first_stage
        if resuming_here:  # the RNG as it was when the checkpoint was written
            torch.set_rng_state(state["rng"]["torch"])
        stage, desc = _make_stage(name, cfg, student, teacher, prepared, pretrained,
                                  pairs if name.startswith(("hints", "joint")) else None, perf,
                                  say, dist.wrap)
        for d in (desc or {}).get("pairs", [desc] if desc else []):  # joint: several pairs
            if not (resuming_here and loop_state):
                say(f"[{name.split(':')[0]}/{d['pair']}] guided {d['guided']} "
                    f"{d['guided_shape']} -> hint {d['hint']} {d['hint_shape']}: "
                    f"{d['regressor']} regressor, {d['nonlinearity']}, "
                    f"{d['regressor_params']:,} parameters")
        resume_loop = loop_state if resuming_here else None
        if resume_loop is not None:  # building the stage drew from the RNG (regressor init)
            torch.set_rng_state(state["rng"]["torch"])
        run_state.save = lambda loop, index=index: checkpoint(index, loop)
        result = fit(stage, prepared.data, run_state, resume=resume_loop)
        if name.startswith("hints"):
            pretrained += _stage1_params(student, pairs[int(name.split(":")[1])][0], prepared)
        history["stages"].append({"name": name, **result, **(desc or {})})
        checkpoint(index + 1, None)  # the stage transition: next stage starts fresh
    with perf.autocast():
        return _finish(cfg, command, run_dir, student, prepared, history,
                       time.perf_counter() - t_start, say, dist.is_main)


_CHECKPOINT_KEYS = ("stage_index", "loop", "student", "rng", "log_lines", "history")


def _checked(state: dict | None, where: Path) -> dict | None:
    """A loaded checkpoint must hold what ``_run`` reads; anything else is not ours."""
    if state is not None and not (isinstance(state, dict)
                                  and all(k in state for k in _CHECKPOINT_KEYS)):
        raise FitnetsError(f"the newest checkpoint in {where} is not a fitnets checkpoint (it "
                           f"lacks {', '.join(_CHECKPOINT_KEYS)}); start the run again into a "
                           "new directory.")
    return state


def hint_pairs(cfg: Config, student: nn.Module, teacher: nn.Module) -> list[tuple[str, str]]:
    if cfg.hints.pairs:
        return [tuple(p) for p in cfg.hints.pairs]
    guided = getattr(student, "default_guided", None)
    hint = getattr(teacher, "default_hint", None)
    if not guided or not hint:
        raise FitnetsError(
            "no hint pair given and the models have no defaults: set "
            "hints.pairs=[[GUIDED_STUDENT_LAYER, HINT_TEACHER_LAYER]] (see `fitnets layers`)."
        )
    return [(guided, hint)]


def _stage1_params(student: nn.Module, guided: str, prepared: Prepared) -> list[nn.Parameter]:
    x = prepared.data.train.x
    return params_reaching(student, lambda v: run_to(student, v, [guided])[0], x)


def _make_stage(name, cfg, student, teacher, prepared, pretrained, pairs, perf, say, wrap):
    data = prepared.data
    if name.startswith("hints"):
        i = int(name.split(":")[1])
        hint = pairs[i][1]
        targets = _teacher_cache(cfg, teacher, lambda x: run_to(teacher, x, [hint])[0], hint,
                                 data, perf, say)
        return hint_stage(cfg, student, teacher, pairs[i], i, data, prepared.input_shape,
                          targets, wrap=wrap)
    if name == "kd":
        targets = _teacher_cache(cfg, teacher, teacher, "logits", data, perf, say)
        return kd_stage(cfg, student, teacher, data, pretrained, targets, wrap=wrap), None
    if name == "joint":  # method=joint
        return joint_stage(cfg, student, teacher, pairs, data, prepared.input_shape, wrap=wrap)
    return label_stage(name, student, cfg.train, data, pretrained,
                       cfg.kd.pretrained_lr_scale, wrap=wrap), None


def _teacher_cache(cfg, teacher, fn, what, data, perf, say):
    mode = cache_mode(cfg.perf.teacher_cache, cfg.data.augment_pad)
    if mode is None:
        return None
    return build_teacher_cache(fn, teacher, data.train.x, what=what, flips=cfg.data.augment_flip,
                               mode=mode, perf=perf, batch_size=data.eval_batch_size, say=say,
                               dist=data.dist)


def _set_layout(data: Data, perf) -> None:
    for arrays in (data.train, data.val, data.test):
        if arrays is not None:
            arrays.x = perf.layout(arrays.x)


def _finish(cfg, command, run_dir, student, prepared, history, elapsed, say,
            write: bool = True) -> dict:
    student.eval()
    d = prepared.data
    test = evaluate(student, d.test, d.eval_batch_size, d.dist)
    val = (evaluate(student, d.val, d.eval_batch_size, d.dist)
           if prepared.data.val is not None else None)
    model_cfg = cfg.model if command == "train" else cfg.student
    if write:
        save_weights({"model": model_cfg.name, "batchnorm": model_cfg.batchnorm,
                      "num_classes": prepared.num_classes,
                      "input_shape": list(prepared.input_shape),
                      "state_dict": student.state_dict(),
                      "preprocess": prepared.preprocess.state_dict()}, run_dir / "model.pt")
    summary = {
        "command": command,
        "method": "train" if command == "train" else cfg.method,
        "dataset": prepared.dataset,
        "model": model_cfg.name,
        "teacher": None if command == "train" or cfg.method == "backprop" else cfg.teacher.name,
        "params": sum(p.numel() for p in student.parameters()),
        "test_acc": test["acc"],
        "test_error": 1.0 - test["acc"],
        "val_acc": None if val is None else val["acc"],
        "stages": history["stages"],
        "epochs": {s["name"]: s["epochs"] for s in history["stages"]},
        "wall_time_s": round(elapsed, 2),
        "seed": cfg.seed,
    }
    if write:
        atomic_write(run_dir / "summary.json", json.dumps(summary, indent=2).encode())
    say(f"done: test accuracy {100 * test['acc']:.2f}% ({summary['params']:,} parameters); "
        f"wrote {run_dir / 'summary.json'}")
    return summary
