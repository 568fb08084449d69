"""The one training loop, and evaluate().

The loop knows only a ``Stage``: a trainable module, its parameter groups, a loss on a batch
and an evaluation. It owns the optimiser, the schedule, early stopping, the metrics log and
the per-epoch checkpoint, so every stage (hints, KD, back-propagation) resumes the same way.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from fitnets.checkpoint import kill_point
from fitnets.config import OptimConfig, StageConfig
from fitnets.distributed import Dist
from fitnets.errors import FitnetsError
from fitnets.optim import RMSpropPylearn2
from fitnets.perf import FP32, Perf

# (x, y, epoch, idx, flipped) -> (loss, parts to log). ``idx`` are the batch's rows of
# data.train and ``flipped`` which of them augmentation mirrored (None: no flips): enough
# for a loss to look the teacher's outputs up in a cache instead of recomputing them.
LossFn = Callable[[torch.Tensor, torch.Tensor, int, torch.Tensor, torch.Tensor | None],
                  tuple[torch.Tensor, dict[str, float]]]
# (x, generator) -> (augmented x, flipped mask or None)
AugmentFn = Callable[[torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor | None]]


@dataclass
class Arrays:
    """A split already on the training device: float inputs (preprocessed) and labels."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class Data:
    train: Arrays
    val: Arrays | None
    test: Arrays
    batch_size: int
    eval_batch_size: int
    augment: AugmentFn | None = None
    dist: Dist = field(default_factory=Dist)  # under torchrun: evaluation is sharded


@dataclass
class Stage:
    """One stage of a run, as data: what to train, on which loss, judged how."""

    name: str  # hints | kd | backprop | train
    module: nn.Module  # the trainable module (student, or student + regressor)
    param_groups: list[dict]  # for the optimiser; each group may carry an lr "scale"
    loss: LossFn  # (x, y, epoch, idx, flipped) -> (loss, parts to log)
    evaluate: Callable[[int], dict[str, float]]  # epoch -> validation/test metrics
    monitor: str | None  # metric to minimise for early stopping (None: no validation)
    cfg: StageConfig
    constrain: Callable[[], None] = lambda: None  # max-norm after each step
    info: dict = field(default_factory=dict)  # extra per-epoch log fields (e.g. pair)
    extra_log: Callable[[int], dict] = lambda epoch: {}  # e.g. lambda of this epoch


class RunState:
    """What the loop needs beyond a stage: checkpoint writer, metrics log, generators."""

    def __init__(self, run_dir: Path, generator: torch.Generator,
                 save: Callable[[dict], None], verbose: bool = True, perf: Perf = FP32,
                 tensorboard: bool = False, dist: Dist | None = None):
        self.run_dir = Path(run_dir)
        self.generator = generator  # shuffling and augmentation; saved in every checkpoint
        self.save = save  # writes a checkpoint from the loop's part of the state
        self.metrics = self.run_dir / "metrics.jsonl"
        self.verbose = verbose
        self.perf = perf  # autocast dtype and memory layout of every step and evaluation
        self.dist = dist or Dist()  # several processes: shards, reductions; rank 0 writes
        self.tensorboard = (tensorboard_writer(self.run_dir)
                            if tensorboard and self.dist.is_main else None)

    def log(self, record: dict) -> None:
        if not self.dist.is_main:
            return
        try:
            with open(self.metrics, "a") as f:
                f.write(json.dumps(record) + "\n")
                f.flush()
        except OSError as e:
            raise FitnetsError(f"cannot append to '{self.metrics}': {e.strerror or e}. The last "
                               "checkpoint is intact; free some space, then continue the run "
                               "with --resume RUN_DIR.") from None
        if self.tensorboard is not None:
            self.tensorboard(record)

    def log_lines(self) -> int:
        if not self.metrics.exists():
            return 0
        with open(self.metrics) as f:
            return sum(1 for _ in f)

    def truncate_log(self, lines: int) -> None:
        """Drop records written after the checkpoint we resume from."""
        if not self.dist.is_main or not self.metrics.exists():
            return
        with open(self.metrics) as f:
            kept = f.readlines()[:lines]
        with open(self.metrics, "w") as f:
            f.writelines(kept)

    def say(self, text: str) -> None:
        if self.verbose:
            tqdm.write(text)


def tensorboard_writer(run_dir: Path) -> Callable[[dict], None]:
    """A metrics hook writing a record's numbers as scalars ``<stage>[:pair]/<key>`` at
    step = epoch, to ``run_dir/tensorboard``."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise FitnetsError("tensorboard=true needs the tensorboard package: pip install "
                           "'fitnets[tensorboard]' (or set tensorboard=false).") from None
    writer = SummaryWriter(str(Path(run_dir) / "tensorboard"))

    def write(record: dict) -> None:
        stage = record["stage"] + (f":{record['pair']}" if "pair" in record else "")
        for key, value in record.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "epoch":
                writer.add_scalar(f"{stage}/{key}", value, record["epoch"])
        writer.flush()

    return write


# --------------------------------------------------------------------------- optimiser


def scaled_groups(module: nn.Module, params: list[nn.Parameter] | None,
                  lr_scale: dict[str, float], prefix: str = "") -> list[dict]:
    """Parameter groups with an lr ``scale`` from the first matching name pattern.

    Patterns match the names inside ``module`` with ``prefix`` stripped (so stage 1 and
    stage 2 use the student's own names, e.g. ``conv1.*``).
    """
    keep = None if params is None else {id(p) for p in params}
    groups: dict[float, list] = {}
    for name, p in module.named_parameters():
        if not p.requires_grad or (keep is not None and id(p) not in keep):
            continue
        short = name[len(prefix):] if name.startswith(prefix) else name
        scale = next((s for pat, s in lr_scale.items() if fnmatch.fnmatchcase(short, pat)), 1.0)
        groups.setdefault(scale, []).append(p)
    return [{"params": ps, "scale": s} for s, ps in groups.items()]


def make_optimizer(groups: list[dict], cfg: OptimConfig) -> torch.optim.Optimizer:
    groups = [{"params": g["params"], "lr": cfg.lr * g.get("scale", 1.0)} for g in groups]
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, eps=cfg.eps, weight_decay=cfg.weight_decay)
    if cfg.name == "rmsprop_pylearn2":  # the authors' RMSProp (fitnets/optim.py)
        return RMSpropPylearn2(groups, lr=cfg.lr, decay=cfg.rmsprop_decay,
                               floor=cfg.rmsprop_floor, weight_decay=cfg.weight_decay)
    return torch.optim.RMSprop(groups, lr=cfg.lr, alpha=cfg.rmsprop_decay, eps=cfg.eps,
                               momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def make_schedule(opt: torch.optim.Optimizer, cfg: OptimConfig, epochs: int):
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.MultiStepLR(opt, cfg.milestones, cfg.gamma)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(epochs, 1))
    if cfg.schedule == "exponential":
        return torch.optim.lr_scheduler.ExponentialLR(opt, cfg.gamma)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _e: 1.0)


def max_norm_fn(module: nn.Module, limits: dict[str, float], prefix: str = "") -> Callable:
    """The pylearn2 max-norm constraints: each output unit's incoming weights have L2 norm
    at most the limit of the first pattern matching the parameter's name."""
    targets = []
    for name, p in module.named_parameters():
        short = name[len(prefix):] if name.startswith(prefix) else name
        if p.dim() < 2:
            continue
        limit = next((v for pat, v in limits.items() if fnmatch.fnmatchcase(short, pat)), None)
        if limit is not None:
            targets.append((p, limit))

    @torch.no_grad()
    def constrain() -> None:
        for p, limit in targets:
            p.copy_(torch.renorm(p, 2, 0, limit))

    return constrain


# --------------------------------------------------------------------------- batches


def shuffled(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    order = torch.randperm(n, generator=generator)
    for i in range(0, n, batch_size):
        yield order[i:i + batch_size]


def eval_batches(arrays: Arrays, batch_size: int,
                 dist: Dist | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's contiguous share of ``arrays`` (all of it in one process), in order, as
    (x, y) batches of at most ``batch_size``."""
    lo, hi = (dist or Dist()).rows(len(arrays))
    for i in range(lo, hi, batch_size):
        j = min(i + batch_size, hi)
        yield arrays.x[i:j], arrays.y[i:j]


@torch.no_grad()
def evaluate(model: Callable[[torch.Tensor], torch.Tensor], arrays: Arrays,
             batch_size: int, dist: Dist | None = None) -> dict[str, float]:
    """Cross-entropy and accuracy of ``model`` (already in eval mode) on ``arrays``.

    Under torchrun (``dist``) each rank evaluates its contiguous share of the rows and the
    sums are added over the ranks: every rank gets the whole split's values (the correct
    count exactly, the loss up to the order of float additions).
    """
    dist = dist or Dist()
    loss, correct = 0.0, 0
    for x, y in eval_batches(arrays, batch_size, dist):
        logits = model(x).float()
        loss += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
    sums = dist.sum({"loss": loss, "correct": float(correct)})
    n = max(len(arrays), 1)
    return {"loss": sums["loss"] / n, "acc": round(sums["correct"]) / n}


# --------------------------------------------------------------------------- the loop


def fit(stage: Stage, data: Data, run: RunState, resume: dict | None = None) -> dict:
    """Train ``stage`` to its end; returns {"epochs": trained, "best_epoch": ...}.

    ``resume`` is the loop state from a checkpoint of this same stage (None: fresh start).
    """
    cfg = stage.cfg
    run.perf.prepare(stage.module)
    opt = make_optimizer(stage.param_groups, cfg.optim)
    sched = make_schedule(opt, cfg.optim, cfg.epochs)
    scaler = run.perf.scaler()
    es = {"best": math.inf, "best_epoch": 0, "bad": 0, "best_state": None}
    first = 1
    if resume is not None:
        stage.module.load_state_dict(resume["module"])
        opt.load_state_dict(resume["optimizer"])
        sched.load_state_dict(resume["schedule"])
        if resume.get("scaler"):
            scaler.load_state_dict(resume["scaler"])
        es = resume["early_stopping"]
        first = resume["epoch"] + 1
        if resume.get("done"):
            first = cfg.epochs + 1
    use_es = cfg.patience > 0 and stage.monitor is not None
    last = resume["epoch"] if resume is not None else 0
    for epoch in range(first, cfg.epochs + 1):
        last = epoch
        t0 = time.perf_counter()
        train_parts = _train_epoch(stage, data, run, opt, scaler, epoch)
        lr = opt.param_groups[0]["lr"]
        sched.step()
        stage.module.eval()
        with run.perf.autocast():
            metrics = stage.evaluate(epoch)
        record = {"stage": stage.name, **stage.info, "epoch": epoch, "lr": lr,
                  **stage.extra_log(epoch), **train_parts, **metrics,
                  "time": round(time.perf_counter() - t0, 3)}
        stop = False
        if stage.monitor is not None:
            value = metrics[stage.monitor]
            if value < es["best"]:
                es.update(best=value, best_epoch=epoch, bad=0)
                if use_es and cfg.restore_best:
                    es["best_state"] = copy.deepcopy(stage.module.state_dict())
            else:
                es["bad"] += 1
            stop = use_es and es["bad"] >= cfg.patience
        run.log(record)
        run.say(_epoch_line(record, cfg.epochs))
        done = stop or epoch == cfg.epochs
        run.save({"epoch": epoch, "done": done, "module": stage.module.state_dict(),
                  "optimizer": opt.state_dict(), "schedule": sched.state_dict(),
                  "scaler": scaler.state_dict(),
                  "early_stopping": es})
        if stop:
            run.say(f"[{stage.name}] early stop: no improvement of {stage.monitor} for "
                    f"{cfg.patience} epochs (best at epoch {es['best_epoch']}).")
            break
    if use_es and cfg.restore_best and es["best_state"] is not None:
        stage.module.load_state_dict(es["best_state"])
    return {"best_epoch": es["best_epoch"], "epochs": last}


def _train_epoch(stage: Stage, data: Data, run: RunState, opt, scaler, epoch: int) -> dict:
    stage.module.train()
    sums: dict[str, float] = {}
    steps = 0
    n = len(data.train)
    bar = tqdm(total=n, desc=f"{stage.name} {epoch}/{stage.cfg.epochs}", unit="img",
               leave=False, disable=None if run.verbose else True, dynamic_ncols=True)
    for step, idx in enumerate(shuffled(n, data.batch_size, run.generator), 1):
        idx = idx.to(data.train.x.device)
        x, y = data.train.x[idx], data.train.y[idx]
        flipped = None
        if data.augment is not None:
            x, flipped = data.augment(x, run.generator)
        # several processes: this rank's part of the batch (and of its indices and flips)
        x, y, idx, flipped, share = run.dist.shard(x, y, idx, flipped)
        with run.perf.autocast():
            loss, parts = stage.loss(run.perf.layout(x), y, epoch, idx, flipped)
        if not torch.isfinite(loss):
            raise FitnetsError(
                f"the {stage.name} loss became {loss.item()} at epoch {epoch}, step {step}: "
                "training diverged. The last good checkpoint is kept; lower the learning rate "
                "(or check the inputs and the teacher) and start again."
            )
        opt.zero_grad(set_to_none=True)
        scaler.scale(run.dist.weigh(loss, share)).backward()  # scaler: pass-through unless fp16
        scaler.step(opt)
        scaler.update()
        stage.constrain()
        kill_point("step")
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + float(v) * share
        steps += 1
        bar.update(len(idx))
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    bar.close()
    sums = run.dist.sum(sums)  # the global batches' means, as in one process
    return {f"train_{k}": v / max(steps, 1) for k, v in sums.items()}


def _epoch_line(r: dict, epochs: int) -> str:
    parts = [f"[{r['stage']}{'/' + str(r['pair']) if 'pair' in r else ''}] "
             f"epoch {r['epoch']}/{epochs}"]
    for key in ("train_loss", "lambda", "val_hint_loss", "val_loss", "val_acc", "test_acc"):
        if key in r:
            v = r[key]
            parts.append(f"{key} {100 * v:.2f}%" if key.endswith("acc") else f"{key} {v:.4g}")
    parts.append(f"({r['time']:.1f}s)")
    return "  ".join(parts)
