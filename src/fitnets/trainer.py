"""The one training loop: a ``Trainer`` runs a method's stages in order.

The Trainer alone owns what every stage needs the same way: the optimiser and schedule,
autocast and memory layout, the DistributedDataParallel wrap of the stage's trainable
module (once per stage), the sharding of each batch over the processes, evaluation,
early stopping, the metrics log and the whole checkpoint schema (below), written and
checked here and nowhere else. A ``Stage`` (fitnets.stage) is a small class: a module,
its parameter groups, one ``loss(batch)`` and an evaluation; the Trainer knows no method.
The optimiser factories and max-norm are in fitnets.optim, the metrics log in
fitnets.runlog.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from fitnets import faults, stall
from fitnets.checkpoint import Checkpoints
from fitnets.data.augment import tta_logits
from fitnets.data.memory import Arrays, Batch
from fitnets.data.training import TrainingData
from fitnets.distributed import Dist
from fitnets.errors import FitnetsError
from fitnets.optim import PER_STEP, make_lookahead, make_optimizer, make_schedule
from fitnets.perf import FP32, Perf
from fitnets.runlog import RunLog
from fitnets.stage import Stage, StagePlan

# The checkpoint schema: one file per epoch and per stage transition.
STAGE_INDEX = "stage_index"  # the stage to continue (== len(stages): all done)
LOOP = "loop"  # that stage's loop state (None: it starts fresh), see Trainer.fit
STUDENT = "student"  # the student's state dict
RNG = "rng"  # {"torch": global CPU RNG, "generator": the shuffling/augmentation generator}
LOG_LINES = "log_lines"  # metrics.jsonl lines written so far (later ones are dropped)
HISTORY = "history"  # JSON: finished stages' results and the elapsed time
CHECKPOINT_KEYS = (STAGE_INDEX, LOOP, STUDENT, RNG, LOG_LINES, HISTORY)


# --------------------------------------------------------------------------- the trainer


class Trainer:
    """Runs stages on one student; checkpoints after every epoch and stage transition."""

    def __init__(self, run_dir: Path, data: TrainingData, student: nn.Module, *, seed: int = 0,
                 perf: Perf = FP32, dist: Dist | None = None, verbose: bool = True,
                 tensorboard: bool = False, checkpoint_steps: int = 0,
                 tracking: str = "none", config: dict | None = None):
        self.data, self.student, self.perf = data, student, perf
        self.dist = dist or Dist()
        self.log = RunLog(run_dir, verbose, tensorboard, writes=self.dist.is_main,
                          tracking=tracking, config=config)
        self.ckpts = Checkpoints(run_dir)
        self.generator = torch.Generator().manual_seed(seed)  # shuffling and augmentation
        self.history: dict = {"stages": [], "elapsed": 0.0}
        self._t0 = time.perf_counter()
        self.checkpoint_steps = checkpoint_steps  # also checkpoint inside epochs (0: no)
        self.throughput: tuple[float, str] | None = None  # the last epoch's (rows/s, unit)
        self._warned: set[str] = set()
        self.on_epoch: Callable[[dict], None] | None = None  # run.Hooks.on_epoch
        self.use_test = True  # False: the test split is never evaluated (run.Hooks)
        self.per_step: list = []  # the stage's per-step schedule and lookahead (fit sets them)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self._t0

    # ---------------------------------------------------------------- stages and resume

    def run(self, plans: list[StagePlan], state: dict | None = None) -> dict:
        """Train every stage of ``plans`` in order, from checkpoint ``state`` if given
        (see ``restore``); returns the history (one entry per stage)."""
        first, loop = self.restore(state, plans)
        for index, plan in enumerate(plans):
            if index < first:  # a resumed run past this stage: its work is in the student
                continue
            here = state is not None and index == first
            if here:  # the RNG as it was when the checkpoint was written
                torch.set_rng_state(state[RNG]["torch"])
            stage = plan.build()
            if not (here and loop):
                for line in stage.intro:
                    self.log.say(line)
            if here and loop is not None:  # building the stage drew from the RNG
                torch.set_rng_state(state[RNG]["torch"])
            result = self.fit(stage, index, loop if here else None)
            self.history["stages"].append({"name": stage.label, **result, **stage.summary})
            self.save(index + 1, None)  # the stage transition: the next stage starts fresh
        return self.history

    def restore(self, state: dict | None, plans: list[StagePlan]) -> tuple[int, dict | None]:
        """Set the student, generator, history and log from a checkpoint; returns the stage
        index to continue and its loop state."""
        if state is None:
            return 0, None
        self.student.load_state_dict(state[STUDENT])
        self.generator.set_state(state[RNG]["generator"])
        self.history = json.loads(state[HISTORY])
        self._t0 = time.perf_counter() - self.history["elapsed"]
        self.log.truncate(state[LOG_LINES])
        first, loop = state[STAGE_INDEX], state[LOOP]
        where = plans[first].label if first < len(plans) else "end"
        inside = (loop or {}).get("partial")
        self.log.say(f"resuming at stage {where}, epoch {loop['epoch'] if loop else 0}"
                     + (f", then step {inside['step']} of epoch {loop['epoch'] + 1}"
                        if inside else ""))
        return first, loop

    def save(self, index: int, loop: dict | None, generator: torch.Tensor | None = None,
             ) -> None:
        """A checkpoint: continue at stage ``index`` with loop state ``loop``; ``generator``:
        the generator state to resume with (a mid-epoch checkpoint's: the epoch's start)."""
        self.history["elapsed"] = self.elapsed
        if self.dist.is_main:
            gen = self.generator.get_state() if generator is None else generator
            self.ckpts.save({STAGE_INDEX: index, LOOP: loop, STUDENT: self.student.state_dict(),
                             RNG: {"torch": torch.get_rng_state(), "generator": gen},
                             LOG_LINES: self.log.lines(), HISTORY: json.dumps(self.history)})
        # several processes: none goes on before rank 0's file is complete, so a rank that
        # crashes after checkpoint N leaves checkpoint N behind for the restart
        self.dist.barrier()
        if faults.ARMED:
            faults.reached("checkpoint", self.dist.rank)

    # ---------------------------------------------------------------- one stage

    def fit(self, stage: Stage, index: int = 0, resume: dict | None = None) -> dict:
        """Train ``stage`` to its end; returns {"epochs": trained, "best_epoch": ...}.

        ``resume`` is the loop state from a checkpoint of this same stage (None: fresh),
        taken at an epoch's end or, with ``partial``, inside the epoch after ``epoch``.
        """
        cfg = stage.cfg
        self.attach(stage)
        # optimiser steps an epoch (the global batches, as train_epoch counts them): the
        # guard judges on steps, not epochs
        per_epoch = -(-len(self.data.train) // self.data.batch_size)
        opt = make_optimizer(stage.param_groups, cfg.optim)
        sched = make_schedule(opt, cfg.optim, cfg.epochs, per_epoch)
        look = make_lookahead(stage.module, cfg.optim, cfg.epochs * per_epoch)
        stepwise = cfg.optim.schedule in PER_STEP
        self.per_step = [s for s in (sched if stepwise else None, look) if s is not None]
        scaler = self.perf.scaler()
        es = {"best": math.inf, "best_epoch": 0, "bad": 0, "best_state": None}
        guard = stall.new_state()  # the stall guard (classifier stages)
        first = last = 0
        partial = None
        if resume is not None:
            stage.module.load_state_dict(resume["module"])
            opt.load_state_dict(resume["optimizer"])
            sched.load_state_dict(resume["schedule"])
            if resume.get("scaler"):
                scaler.load_state_dict(resume["scaler"])
            if look is not None and resume.get("lookahead"):
                look.load_state_dict(resume["lookahead"])
            es, last, partial = resume["early_stopping"], resume["epoch"], resume.get("partial")
            guard = stall.restore(resume.get("stall"), per_epoch)
            first = cfg.epochs if resume.get("done") else last

        def loop_state(epoch: int, done: bool, part: dict | None = None) -> dict:
            return {"epoch": epoch, "done": done, "module": stage.module.state_dict(),
                    "optimizer": opt.state_dict(), "schedule": sched.state_dict(),
                    "scaler": scaler.state_dict(), "early_stopping": es, "stall": guard,
                    "partial": part, "lookahead": look and look.state_dict()}

        def save_inside(epoch: int, part: dict, generator: torch.Tensor) -> None:
            self.save(index, loop_state(epoch - 1, False, part), generator)

        use_es = cfg.patience > 0 and stage.monitor is not None
        # the best validation epoch's weights end the stage, with or without early stopping:
        # best_epoch, model.pt and the summary's test_acc then name one epoch
        keep_best = cfg.restore_best and stage.monitor is not None
        records: list[dict] = []
        for epoch in range(first + 1, cfg.epochs + 1):
            last, t0 = epoch, time.perf_counter()
            fields = stage.start_epoch(epoch)
            train_parts = self.train_epoch(stage, opt, scaler, epoch, partial,
                                           lambda part, g, e=epoch: save_inside(e, part, g))
            partial = None
            if look is not None:
                look.sync()  # the epoch ends with the averaged weights
            lr = opt.param_groups[0]["lr"]
            if not stepwise:
                sched.step()
            stage.module.eval()
            with self.perf.autocast():
                metrics = stage.evaluate(self)
            chance = metrics.pop("chance", None)
            stop = _early_stopping(es, stage, metrics, epoch, use_es, keep_best)
            event = None
            if chance is not None:  # the stall guard; the stage's last epoch is judged final
                held, metric = stall.held_out(metrics)
                event = stall.update(guard, epoch, held, train_parts.get("train_loss"),
                                     chance, epoch * per_epoch, cfg.epochs * per_epoch,
                                     final=stop or epoch == cfg.epochs, metric=metric)
            record = {"stage": stage.name, "kind": stage.kind, **stage.info, "epoch": epoch,
                      **({"step": epoch * per_epoch} if chance is not None else {}),
                      "lr": lr, **fields, **train_parts, **metrics,
                      **({"stalled": True} if guard["epoch"] is not None else {}),
                      **({"left_chance_step": guard["left"]["step"]} if event == "left"
                         else {}),
                      "time": round(time.perf_counter() - t0, 3)}
            self.log.log(record)
            self.log.say(_epoch_line(record, cfg.epochs, self.throughput))
            if event is not None:
                self._say_stall(stage, guard, event)
            records.append(record)
            self._check(stage, records)
            halt = event == "stalled" and cfg.on_stall == "stop"
            self.save(index, loop_state(epoch, stop or halt or epoch == cfg.epochs))
            if self.on_epoch is not None:  # after the checkpoint: nothing is lost if it raises
                self.on_epoch(record)
            if stop:
                self.log.say(f"[{stage.name}] early stop: no improvement of {stage.monitor} "
                             f"for {cfg.patience} epochs (best at epoch {es['best_epoch']}).")
                break
            if halt:
                self.log.say(f"[{stage.name}] stopped: the stage stalled and on_stall=stop.")
                break
        restored = keep_best and es["best_state"] is not None
        if restored:
            stage.module.load_state_dict(es["best_state"])
        result = {"best_epoch": es["best_epoch"], "epochs": last,
                  "weights_epoch": es["best_epoch"] if restored else last}
        result.update(stall.result(guard))  # stalled (its last verdict), or a slow start
        return result

    def attach(self, stage: Stage) -> None:
        """Put the stage's module in the run's memory layout, set ``stage.net`` (what its
        loss runs: the module, or DDP's wrapper under torchrun) and, under perf.compile,
        compile the step: in one process ``stage.loss`` whole (``stage.compiled_loss``,
        replayed as CUDA graphs under perf.cuda_graphs); under torchrun the DDP-wrapped
        module, as torch documents for DDP (its gradient hooks stay outside the graph)."""
        self.perf.prepare(stage.module)
        stage.net = self.dist.wrap(stage.module,
                                   [p for g in stage.param_groups for p in g["params"]])
        if not self.perf.compile:
            return
        # the teacher's forward, the student's (a hint stage's layers above its guided layer,
        # which nothing uses, are dropped) and the loss in one graph. With CUDA graphs
        # (reduce-overhead) the outputs live in buffers the next replay overwrites: the
        # step reads them (backward, sums, finiteness flag) before the next one starts.
        if self.dist.enabled:
            stage.net = torch.compile(stage.net)
        else:
            stage.compiled_loss = torch.compile(
                stage.loss, mode="reduce-overhead" if self.perf.cuda_graphs else None)
            stage.graphs = self.perf.cuda_graphs
        if getattr(stage.constrain, "targets", 0):
            # max-norm over all constrained weights as one compiled function: fused kernels
            # instead of one renorm launch per parameter (the same values)
            stage.constrain = torch.compile(stage.constrain)

    def _say_stall(self, stage: Stage, guard: dict, event: str) -> None:
        """Say what the stall guard (fitnets/stall.py) has just decided: a stall with the
        likely causes, or a slow start / a withdrawn stall."""
        self.log.say(stall.describe(guard, stage.name, event))
        if event == "stalled":
            self.log.say("warning: " + stall.advice(stage.name, stage.cfg.optim,
                                                    after_hints=any(
                s["name"].startswith("hints") for s in self.history["stages"])))

    def train_epoch(self, stage: Stage, opt: torch.optim.Optimizer, scaler, epoch: int,
                    partial: dict | None = None,
                    save_inside: Callable[[dict, torch.Tensor], None] | None = None) -> dict:
        """One pass over the training set (``stage.start_epoch(epoch)`` already called).
        ``partial``: the step and loss sums of a checkpoint inside this epoch (continue after
        it); ``save_inside(partial, generator_state)`` writes such a checkpoint every
        ``checkpoint_steps`` steps. Returns the epoch's mean loss parts as ``train_<part>``."""
        stage.module.train()
        start = partial["step"] if partial else 0
        # loss sums stay on the device: nothing inside a step waits for it (read once below,
        # and at a checkpoint inside the epoch)
        sums: dict[str, Any] = dict(partial["sums"]) if partial else {}
        bad = None  # [first step with a non-finite loss (-1: none), its loss], on the device
        epoch_rng = self.generator.get_state()  # what a checkpoint inside the epoch resumes
        n, b = len(self.data.train), self.data.batch_size
        total_steps = -(-n // b)
        bar = tqdm(total=n, initial=min(start * b, n), leave=False,
                   unit="img" if self.data.unit[0] == "img" else "block",
                   desc=f"{stage.name} {epoch}/{stage.cfg.epochs}", dynamic_ncols=True,
                   disable=None if self.log.verbose else True)
        t_start = t_ready = time.perf_counter()
        waited, steps = 0.0, start
        for step, full in enumerate(self.data.train_batches(self.generator, start, epoch),
                                    start + 1):
            waited += time.perf_counter() - t_ready  # the loader's time, not the model's
            if full.share is None:  # several processes: this rank's part of the batch
                x, y, idx, view, share = self.dist.shard(full.x, full.y, full.idx,
                                                         full.view)
                batch = Batch(self.perf.layout(x), y, idx, view)
            else:  # streamed: the loader already read only this rank's part
                batch, share = full, full.share
            loss_fn = stage.compiled_loss or stage.loss
            if stage.graphs:  # a graph replays one shape: the full batch's
                if (full.size or len(full)) == self.data.batch_size:
                    # a new step: the previous replay's outputs may now be overwritten
                    torch.compiler.cudagraph_mark_step_begin()
                else:
                    loss_fn = stage.loss
            loss, parts = self._step(stage, loss_fn, opt, scaler, batch, share)
            bad = _note_finite(bad, loss, step)
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v.detach() * share
            steps += 1
            bar.update(full.size or len(full))
            if save_inside and self.checkpoint_steps and step % self.checkpoint_steps == 0 \
                    and step < total_steps:
                _raise_if_bad(bad, stage, epoch)  # a checkpoint holds good weights only
                save_inside({"step": step, "sums": _floats(sums)}, epoch_rng)
            t_ready = time.perf_counter()
        bar.close()
        _raise_if_bad(bad, stage, epoch)
        self._note_speed(stage, (steps - start) * b, time.perf_counter() - t_start, waited)
        sums = self.dist.sum(_floats(sums))  # the global batches' means, as in one process
        return {f"train_{k}": v / max(steps, 1) for k, v in sums.items()}

    def _step(self, stage: Stage, loss_fn: Callable, opt, scaler, batch: Batch, share: float,
              ) -> tuple[torch.Tensor, dict]:
        """One optimiser step on ``batch``: loss (``stage.loss`` or its compiled form),
        backward, update, max-norm."""
        with self.perf.autocast():
            loss, parts = loss_fn(batch)
        opt.zero_grad(set_to_none=True)
        scaler.scale(self.dist.weigh(loss, share)).backward()  # pass-through unless fp16
        scaler.step(opt)
        scaler.update()
        stage.constrain()
        for rule in self.per_step:  # a per-step lr schedule, lookahead (optim.py)
            rule.step()
        if faults.ARMED:
            faults.reached("step")
        return loss, parts

    def _check(self, stage: Stage, records: list[dict]) -> None:
        """The stage's own check of its progress; its warning is said once per stage."""
        if stage.check is None or stage.label in self._warned:
            return
        message = stage.check(records)
        stage.module.train()  # the check may have run it in eval mode
        if message:
            self._warned.add(stage.label)
            self.log.say("warning: " + message)
            stage.summary["warning"] = message  # kept in summary.json's stage entry

    def _note_speed(self, stage: Stage, rows: int, seconds: float, waited: float) -> None:
        """Keep the epoch's images/s (tokens/s for text) for its line; warn once per stage
        when the loader, not the model, set the pace (over a third of the epoch spent
        waiting for data) and the data say what would help (``loader_advice``: a streaming
        loader does; in-memory batches are cut by the same indexing and augmentation
        whatever the settings, so there is nothing to advise)."""
        unit, per_row = self.data.unit
        self.throughput = (rows * per_row / seconds, unit) if seconds > 0 else None
        key = f"loader:{stage.label}"
        advice = self.data.loader_advice()
        if advice and seconds > 2.0 and waited > seconds / 3 and key not in self._warned:
            self._warned.add(key)
            self.log.say(
                f"[{stage.name}] the data loader is the bottleneck: {100 * waited / seconds:.0f}%"
                f" of the epoch was spent waiting for images. {advice}")

    # ---------------------------------------------------------------- evaluation

    def batches(self, arrays: Arrays) -> Iterator[Batch]:
        """This rank's contiguous share of ``arrays`` (all of it in one process), in order."""
        return self.data.eval_batches(arrays, self.dist.rows(len(arrays)))

    @torch.no_grad()
    def evaluate(self, model: Callable[[torch.Tensor], torch.Tensor],
                 arrays: Arrays, tta: str = "none", fill: str = "zeros") -> dict[str, float]:
        """Cross-entropy and accuracy of ``model`` (in eval mode) on ``arrays``, its logits
        averaged over the test-time views ``tta`` (data.tta) unless "none", shifted views
        filled with ``fill`` (data.augment_pad_mode).

        Under torchrun each rank evaluates its share of the rows and the sums are added over
        the ranks: every rank gets the whole split's values (the correct count exactly, the
        loss up to the order of float additions).
        """
        loss, correct, counts, seen, tokens = 0.0, 0, None, 0, False
        for b in self.batches(arrays):
            logits = (model(b.x) if tta == "none" else tta_logits(model, b.x, tta, fill)).float()
            y = b.y
            if logits.dim() == 3:  # a language model's (B, T, vocab): a prediction a position
                logits, y, tokens = logits.flatten(0, 1), y.flatten(), True
            loss += F.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(1) == y).sum().item()
            # a masked LM's labels are IGNORE (-100) off its masked positions, which
            # cross_entropy leaves out of the sum: they count no prediction either
            seen += (y != -100).sum().item() if tokens else len(y)
            if not tokens:
                found = torch.bincount(y.flatten(), minlength=logits.shape[1]).cpu()
                counts = found if counts is None else counts + found[:len(counts)]
        counts = [] if counts is None else counts.tolist()
        per_class = {f"class{i}": float(c) for i, c in enumerate(counts)}
        sums = self.dist.sum({"loss": loss, "correct": float(correct), "seen": float(seen),
                              **per_class})
        n = max(sums["seen"], 1)
        if tokens:  # chance: the training split's unigram perplexity (data/text.py)
            return {"loss": sums["loss"] / n, "acc": round(sums["correct"]) / n,
                    "ppl": math.exp(sums["loss"] / n),
                    "chance": getattr(self.data, "unigram_ppl", None)}
        chance = stall.chance_level([sums[k] for k in per_class])
        return {"loss": sums["loss"] / n, "acc": round(sums["correct"]) / n, "chance": chance}

    @torch.no_grad()
    def mean(self, fn: Callable[[Batch], torch.Tensor], arrays: Arrays) -> float:
        """The mean over the examples of ``arrays`` of ``fn(batch)``, a per-batch mean."""
        total = sum(fn(b).item() * len(b) for b in self.batches(arrays))
        return self.dist.sum({"total": total})["total"] / max(len(arrays), 1)

    def classifier_metrics(self, model: nn.Module) -> dict[str, float]:
        """Validation and test metrics of a classifier; ``val_error`` drives early stopping."""
        out = {}
        if self.data.val is not None:
            v = self.evaluate(model, self.data.val)
            out.update(val_loss=v["loss"], val_acc=v["acc"], val_error=1.0 - v["acc"])
            if "ppl" in v:  # a language model: perplexity, and accuracy of the next token
                out["val_ppl"] = v["ppl"]
        if self.use_test:
            t = self.evaluate(model, self.data.test)
            out["test_acc"] = t["acc"]
            if "ppl" in t:
                out["test_ppl"] = t["ppl"]
        # for the stall guard (popped before logging): the held-out split's chance level
        out["chance"] = v["chance"] if self.data.val is not None else t["chance"]
        return out


def _note_finite(bad: torch.Tensor | None, loss: torch.Tensor, step: int) -> torch.Tensor:
    """Record, on the device and without waiting for it, the first step whose loss is not
    finite and that loss: ``bad`` is [step or -1, loss]."""
    value = loss.detach().float()
    if bad is None:
        bad = torch.full((2,), -1.0, device=value.device)
    first = (bad[0] < 0) & ~torch.isfinite(value)
    return torch.stack([torch.where(first, float(step), bad[0]),
                        torch.where(first, value, bad[1])])


def _raise_if_bad(bad: torch.Tensor | None, stage: Stage, epoch: int) -> None:
    """The divergence error, naming the first non-finite step, if there was one (one read of
    the device flag: at an epoch's end and before a checkpoint inside it)."""
    if bad is None:
        return
    step, value = bad.tolist()
    if step >= 0:
        raise FitnetsError(
            f"the {stage.name} loss became {value} at epoch {epoch}, step {int(step)}: "
            "training diverged. The last good checkpoint is kept; lower the learning "
            "rate (or check the inputs and the teacher) and start again.")


def _floats(sums: dict) -> dict[str, float]:
    return {k: float(v) for k, v in sums.items()}


def check_checkpoint(state: Any, where: Path) -> None:
    """A loaded checkpoint must hold what the Trainer reads; anything else is not ours."""
    if not (isinstance(state, dict) and all(k in state for k in CHECKPOINT_KEYS)):
        raise FitnetsError(f"the newest checkpoint in {where} is not a fitnets checkpoint (it "
                           f"lacks {', '.join(CHECKPOINT_KEYS)}); start the run again into a "
                           "new directory.")


def _early_stopping(es: dict, stage: Stage, metrics: dict, epoch: int, use_es: bool,
                    keep_best: bool) -> bool:
    """Update the early-stopping state ``es`` with this epoch (``keep_best``: copy the
    weights of a new best epoch); True: stop now."""
    if stage.monitor is None:
        return False
    value = metrics[stage.monitor]
    if value < es["best"]:
        es.update(best=value, best_epoch=epoch, bad=0)
        if keep_best:
            es["best_state"] = copy.deepcopy(stage.module.state_dict())
    else:
        es["bad"] += 1
    return use_es and es["bad"] >= stage.cfg.patience


def _epoch_line(r: dict, epochs: int, throughput: tuple[float, str] | None = None) -> str:
    parts = [f"[{r['stage']}{'/' + str(r['pair']) if 'pair' in r else ''}] "
             f"epoch {r['epoch']}/{epochs}"]
    for key in ("train_loss", "lambda", "val_hint_loss", "val_loss", "val_ppl", "val_acc",
                "test_ppl", "test_acc"):
        if key in r:
            v = r[key]
            parts.append(f"{key} {100 * v:.2f}%" if key.endswith("acc") else f"{key} {v:.4g}")
    speed = f", {throughput[0]:,.0f} {throughput[1]}/s" if throughput else ""
    parts.append(f"({r['time']:.1f}s{speed})")
    return "  ".join(parts)
