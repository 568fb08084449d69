"""A run: set up -> data -> models -> the method's stages -> the Trainer -> the summary.

``run(cfg, "train", ...)`` trains one network on labels; ``run(cfg, "distill", ...)`` runs the
configured method (``fitnets.distill.methods``). The Trainer checkpoints after every epoch
and stage transition, so ``resume=True`` continues in the right stage, bit-exact.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fitnets import distributed
from fitnets.checkpoint import (
    Checkpoints,
    atomic_write,
    load_into,
    load_weights,
    save_weights,
)
from fitnets.config import Config, ModelConfig, dump_yaml, make_config, to_dict
from fitnets.data.prepare import Prepared, dataset_classes, prepare, prepare_python
from fitnets.data.text import make_tokenizer, tokenizer_id
from fitnets.distill import methods
from fitnets.distill.taps import compile_taps
from fitnets.distill.teacher import Teacher
from fitnets.errors import FitnetsError
from fitnets.models import MaxoutOptions, build_model, data_init, takes
from fitnets.models.bert import MODELS as MASKED_MODELS
from fitnets.models.counting import count_mults
from fitnets.models.ecosystem import HFLanguageModel, is_ecosystem, is_masked_lm
from fitnets.perf import resolve_perf
from fitnets.stage import StagePlan
from fitnets.trainer import Trainer, check_checkpoint

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


def build_net(mcfg: ModelConfig, prepared: Prepared, device: torch.device,
              key: str = "model") -> nn.Module:
    """The network ``mcfg`` (the config's section ``key``) describes, for ``prepared``."""
    images = prepared.input_dtype.is_floating_point  # else token ids: no channels
    lm = prepared.tokenizer is not None  # data.name=text: a language model
    model = build_model(mcfg.name, num_classes=prepared.num_classes,
                        in_channels=prepared.input_shape[0] if images else None,
                        batchnorm=mcfg.batchnorm, maxout=MaxoutOptions.of(mcfg),
                        pretrained=mcfg.pretrained, key=key, sizes=sizes(mcfg, prepared),
                        task="lm" if lm else "classify")
    if isinstance(model, HFLanguageModel):
        hf_vocabulary(model, prepared, key)
    objective = getattr(model, "objective", None)
    if lm and objective is not None and (objective == "masked") != (prepared.masking
                                                                    is not None):
        raise FitnetsError(f"{key} '{mcfg.name}' is a {objective} language model, but this "
                           "run trains the "
                           + ("masked" if prepared.masking is not None else "causal")
                           + " objective (the models' names decide it).")
    expected = getattr(model, "input_shape", None)
    if expected is not None and tuple(expected) != tuple(prepared.input_shape):
        raise FitnetsError(
            f"model '{mcfg.name}' is built for inputs {tuple(expected)} but dataset "
            f"'{prepared.dataset}' gives {tuple(prepared.input_shape)}; pick a model for "
            "this dataset (`fitnets layers --list`)."
        )
    if mcfg.init == "torch" and not mcfg.pretrained:
        for m in model.modules():
            if hasattr(m, "reset_parameters") and m is not model:
                m.reset_parameters()
    return model.to(device)


def is_masked_name(name: str) -> bool:
    """Whether the model ``name`` is a masked language model: the built-in ``bert``, or an
    ``hf:DIR`` whose config names a *ForMaskedLM architecture."""
    if name in MASKED_MODELS:
        return True
    return isinstance(name, str) and name.startswith("hf:") and is_masked_lm(name[3:])


def lm_objective(cfg: Config, command: str) -> bool:
    """On data.name=text, whether the run trains a masked language model: the objective
    follows the models. A student (or ``fitnets train``'s model) and a teacher of which one
    is masked and the other causal are refused, naming both."""
    key = "model" if command == "train" else "student"
    named = [(key, getattr(cfg, key).name)]
    if command != "train" and methods.needs_teacher(command, cfg):
        named.append(("teacher", cfg.teacher.name))
    kinds = [(k, n, "masked" if is_masked_name(n) else "causal") for k, n in named]
    if len({kind for *_, kind in kinds}) > 1:
        said = " and ".join(f"the {k} '{n}' is a {kind} language model" for k, n, kind in kinds)
        raise FitnetsError(
            f"{said}: a teacher and its student must share one objective (next-token "
            "prediction, or BERT's masked tokens), since KD compares their predictions "
            "position by position. Pair a masked LM (bert, hf:DIR of a *ForMaskedLM) "
            "with a masked LM, or a causal one (gpt, hf:DIR of a *ForCausalLM) with a "
            "causal one.")
    return kinds[0][2] == "masked"


def sizes(mcfg: ModelConfig, prepared: Prepared) -> dict:
    """The size keys (width, depth, heads) of a model section, and for a model over token
    ids that takes one, its context: the data's block length."""
    out = {"width": mcfg.width, "depth": mcfg.depth, "heads": mcfg.heads}
    if not prepared.input_dtype.is_floating_point and (
            takes(mcfg.name, "context")
            or (prepared.tokenizer is not None and is_ecosystem(mcfg.name))):  # hf: LMs
        out["context"] = prepared.input_shape[0]
    return out


def hf_vocabulary(model: HFLanguageModel, prepared: Prepared, key: str) -> None:
    """A Hugging Face language model reads and predicts the ids of the vocabulary it was
    made for: refuse one whose vocabulary size is not data.tokenizer's, or whose folder
    holds a tokenizer other than data.tokenizer (the teacher's and the student's ids would
    mean different tokens), naming both and the way out."""
    spec = prepared.tokenizer
    folder = Path(model.where).expanduser()
    own = folder if folder.is_dir() and any(
        (folder / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")) else None
    way_out = (f"Set data.tokenizer={own} (the tokenizer saved with the model)" if own
               else "Set data.tokenizer to the tokenizer the model was made for")
    if model.num_classes != prepared.num_classes:
        raise FitnetsError(
            f"{key} hf model '{model.where}' has a vocabulary of {model.num_classes:,} ids, "
            f"but data.tokenizer={spec!r} gives {prepared.num_classes:,} ids: a language "
            "model's logits score the ids of its own vocabulary (and a teacher's and a "
            f"student's are compared id by id), so both need one. {way_out}, or save the "
            f"model with vocab_size={prepared.num_classes} (its config) for this tokenizer.")
    if own is None or tokenizer_id(str(own)) == tokenizer_id(spec):
        return
    theirs, ours = make_tokenizer(str(own)), make_tokenizer(spec)
    if getattr(ours, "tok", None) is not None and ours.tok.get_vocab() == theirs.tok.get_vocab():
        return  # a copy of the same tokenizer
    raise FitnetsError(
        f"{key} hf model '{model.where}' comes with its own tokenizer ({own}, "
        f"{theirs.vocab_size:,} ids), which is not data.tokenizer={spec!r} "
        f"({ours.vocab_size:,} ids): the same id would be another token for the model than "
        f"for the data (and for a teacher than for its student). {way_out}, or give a "
        "model made for data.tokenizer.")


def same_vocabulary(weights: str, prepared: Prepared, tokenizer: str | None) -> None:
    """A language-model teacher's run must have used this run's tokenizer: distillation
    compares next-token distributions id by id, so other vocabularies are refused, naming
    both and the way out (a teacher run's model.pt records its tokenizer and vocabulary)."""
    path = Path(weights) / "model.pt" if Path(weights).is_dir() else Path(weights)
    if path.suffix != ".pt" or not path.is_file():
        return  # a state-dict file of another kind: load_into names what does not fit
    bundle = load_weights(path)
    if not isinstance(bundle, dict) or "num_classes" not in bundle:
        return
    theirs, vocab = bundle.get("tokenizer"), int(bundle["num_classes"])
    tokenizer = tokenizer_id(tokenizer) if tokenizer is not None else None
    if vocab != prepared.num_classes or (theirs is not None and tokenizer is not None
                                         and theirs != tokenizer):
        raise FitnetsError(
            f"the teacher ({weights}) was trained on the vocabulary of tokenizer "
            f"{theirs or 'unknown'!r} ({vocab:,} ids), but this run's data.tokenizer="
            f"{tokenizer!r} gives {prepared.num_classes:,} ids: a student learns the "
            "teacher's next-token distribution id by id, so both need one vocabulary. Set "
            f"data.tokenizer={theirs or 'THE_TEACHERS'} (the teacher's), or train a teacher "
            f"with data.tokenizer={tokenizer}.")


def load_teacher(mcfg: ModelConfig, prepared: Prepared, device: torch.device,
                 tokenizer: str | None = None) -> nn.Module:
    if not mcfg.weights and (mcfg.pretrained or mcfg.name.startswith("hf:")):
        # the library's own weights; an hf: folder or hub id comes with its weights
        teacher = build_net(mcfg, prepared, device, "teacher")
        if isinstance(teacher, HFLanguageModel) and not teacher.weights:
            raise FitnetsError(
                f"the teacher '{mcfg.name}' is a folder without weights (a config only): a "
                "teacher must be trained. Save the trained model there (save_pretrained), "
                "or set teacher.weights=RUN_DIR (a `fitnets train` run of this model).")
        return teacher.eval().requires_grad_(False)
    if not mcfg.weights:
        raise FitnetsError(
            "the teacher needs trained weights: set teacher.weights=RUN_DIR (a finished "
            "`fitnets train` run) or a state-dict file. Train one with e.g. "
            "`fitnets train recipes/mnist-teacher.yaml`."
        )
    if not prepared.input_dtype.is_floating_point:
        same_vocabulary(mcfg.weights, prepared, tokenizer)
    teacher = build_net(mcfg, prepared, device, "teacher")
    load_into(teacher, mcfg.weights, mcfg.name, prepared.preprocess.kind)
    return teacher.eval().requires_grad_(False)


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
        self.created = not self.path.exists()
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

    def discard(self) -> None:
        """A fresh run that failed before its first step leaves nothing behind (its folder
        if this run made it and nothing else wrote there), so the same command works once
        the cause is fixed, without --resume."""
        self.close()
        (self.path / ".lock").unlink(missing_ok=True)
        if self.created and not any(self.path.iterdir()):
            self.path.rmdir()


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
        verbose: bool = True, python: Python | None = None, hooks: Hooks | None = None) -> dict:
    """Train (command="train") or distill; returns the summary (also in summary.json).

    ``python``: the user's own networks and datasets (fitnets.api), in place of the ones the
    config names; the student is trained in place. ``hooks``: a caller's view of each epoch
    (fitnets.search). Under torchrun (WORLD_SIZE > 1) every process calls this; see
    fitnets.distributed.
    """
    dist = distributed.setup(cfg.dist, resolve_device(cfg.device))
    try:
        run_dir, resume = _agree_on_run_dir(Path(run_dir), resume, dist)
        lock = RunDir(run_dir, resume) if dist.is_main else None  # rank 0 alone writes
        try:
            try:
                r = _set_up(cfg, command, run_dir, resume, verbose and dist.is_main, dist,
                            python or Python(), hooks or Hooks())
            except BaseException:
                if lock is not None and not resume:
                    lock.discard()
                raise
            try:
                r.trainer.run(r.plans, r.state)
                with r.trainer.perf.autocast():
                    summary = _finish(r)
            finally:
                r.trainer.log.close()
        finally:
            if lock is not None:
                lock.close()
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


@dataclass
class Python:
    """Objects given from Python instead of names in the config (all optional)."""

    student: nn.Module | None = None
    teacher: nn.Module | None = None
    data: dict | None = None  # train / val / test: torch Datasets or DataLoaders


@dataclass
class Hooks:
    """What a caller such as ``fitnets search`` adds to a run."""

    # called with each epoch's record (as appended to metrics.jsonl) after the epoch's
    # checkpoint, so an exception raised there (a pruned trial) loses nothing
    on_epoch: Callable[[dict], None] | None = None
    # never evaluate the test split (a search selects on validation only); needs a
    # validation split, and the summary's test_acc is then null
    held_out_only: bool = False


@dataclass
class _Run:
    cfg: Config
    command: str
    run_dir: Path
    prepared: Prepared
    trainer: Trainer
    plans: list[StagePlan]
    state: dict | None  # the checkpoint to resume from
    teacher: Teacher | None
    say: Callable[..., None]


def _set_up(cfg: Config, command: str, run_dir: Path, resume: bool, verbose: bool,
            dist: distributed.Dist, python: Python, hooks: Hooks) -> _Run:
    """Everything before the first step: config file, checkpoint, data, models, stages."""
    # rank 0 reads the checkpoint and sends it: every rank continues from the same one
    state = dist.broadcast(Checkpoints(run_dir).load_latest() if resume and dist.is_main
                           else None)
    if state is not None:
        check_checkpoint(state, run_dir / "checkpoints")
    if dist.is_main and state is None:  # fresh (also --resume of a run killed before a save)
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    distributed.check_batch(cfg, dist)
    cfg = distributed.scale_lr(cfg, dist)
    perf = resolve_perf(cfg.perf, dist.device, dist.world)
    seed_everything(cfg.seed)
    say = print if verbose else (lambda *a, **k: None)
    shard = (dist.rank, dist.world)
    masked = cfg.data.name == "text" and python.data is None and (
        lm_objective(cfg, command) if python.student is None
        else getattr(python.student, "objective", None) == "masked")
    prepared = (prepare_python(python.data, cfg.data, dist.device, shard) if python.data
                else prepare(cfg.data, dist.device, shard=shard, masked=masked))
    prepared.data.map_x(perf.layout)
    if hooks.held_out_only and prepared.data.val is None:
        raise FitnetsError("a search selects on a validation split, never the test set, but "
                           "this data has none: set data.val_size=N (images held out of "
                           "training), or pass a val= dataset.")
    if prepared.how:
        say(prepared.how)
    student, teacher = _models(cfg, command, prepared, dist, perf, say, python)
    plans = methods.plan(command, methods.Setup(cfg, student, teacher, prepared.data,
                                                prepared.input_shape))
    if perf.compile:
        # each stage's training module is compiled by the Trainer; inner layers are read by
        # compilable readers (distill/taps.py); the frozen teacher is compiled in place
        compile_taps(student)
        if teacher is not None:
            compile_taps(teacher.net)
            teacher.net.compile()
    if dist.enabled:
        say(distributed.describe(cfg, dist, plans))
    say(f"run directory: {run_dir}  device: {dist.device}  stages: "
        f"{' -> '.join(p.label for p in plans)}")
    say(f"speed: {perf.describe()}" + (f", {teacher.describe_cache()}" if teacher else ""))
    trainer = Trainer(run_dir, prepared.data, student, seed=cfg.seed, perf=perf, dist=dist,
                      verbose=verbose, tensorboard=cfg.tensorboard,
                      checkpoint_steps=cfg.checkpoint_steps, tracking=cfg.tracking,
                      config=to_dict(cfg))
    trainer.on_epoch, trainer.use_test = hooks.on_epoch, not hooks.held_out_only
    if dist.is_main and not resume:
        # written once the run has set up: a run that failed before (a syntax error in a
        # model file, an unknown layer) leaves no run that blocks the same command
        atomic_write(run_dir / "config.yaml", dump_yaml(cfg).encode())
    return _Run(cfg, command, run_dir, prepared, trainer, plans, state, teacher, say)


def _models(cfg, command, prepared, dist, perf, say,
            python: Python) -> tuple[nn.Module, Teacher | None]:
    """The student (or ``fitnets train``'s model) and, when the method needs one, the
    teacher (the config's, or the ones given from Python)."""
    device = dist.device
    if python.student is not None:
        student = python.student.to(device)
    else:
        if not prepared.num_classes and python.data:  # no module to ask: the dataset says
            prepared.num_classes = dataset_classes(python.data["train"])
        if not prepared.num_classes:
            raise FitnetsError(
                "the student is built from its name, but these Python datasets do not say "
                "how many classes there are: give the training dataset a `classes` list or a "
                "`targets` tensor of its labels, or pass the student as an nn.Module.")
        key = "model" if command == "train" else "student"
        student = build_net(getattr(cfg, key), prepared, device, key)
        data_init(student, prepared.data)  # e.g. a whitening layer computed from the data
    _takes(student, prepared.input_dtype)
    if not prepared.num_classes:  # a Python dataset: the student's outputs say how many
        with torch.no_grad():
            prepared.num_classes = int(student.eval()(prepared.data.probe()).shape[1])
    teacher = None
    if methods.needs_teacher(command, cfg):
        net = (python.teacher.to(device).eval().requires_grad_(False) if python.teacher
               is not None else load_teacher(cfg.teacher, prepared, device,
                                             cfg.data.tokenizer))
        _takes(net, prepared.input_dtype)
        perf.prepare(net)
        if prepared.masking is not None and cfg.perf.teacher_cache not in ("auto", "off"):
            raise FitnetsError(
                f"perf.teacher_cache={cfg.perf.teacher_cache} banks the teacher's outputs "
                "of each training row once, but a masked language model's rows are masked "
                "afresh every batch (the teacher must see each batch's masks): use "
                "perf.teacher_cache=auto or off.")
        train_x = prepared.data.train_inputs()  # None: streamed, or masked: no cache
        teacher = Teacher(net, cfg, perf, train_x, prepared.data.eval_batch_size, say=say,
                          dist=dist)
        if prepared.masking is not None:
            teacher._why_off = "off: the inputs are masked afresh every batch"
    return student, teacher


def _takes(net: nn.Module, dtype: torch.dtype) -> None:
    """A network fed token ids (a Python text dataset) is traced for its layer shapes and
    costs with ids too: it gets ``input_dtype`` (fitnets.models.counting.dummy_input)
    unless it says its own."""
    if not dtype.is_floating_point and getattr(net, "input_dtype", None) is None:
        net.input_dtype = dtype


def _mults(net: nn.Module, input_shape) -> int | None:
    """Multiplications of one image through ``net`` (models/counting.py); None when a
    network cannot be counted (counting only informs, it never fails a finished run)."""
    try:
        return count_mults(net, tuple(input_shape))
    except Exception:
        return None


def _finish(r: _Run) -> dict:
    """Final test (and validation) accuracy, model.pt and summary.json (rank 0 writes)."""
    cfg, command, trainer, prepared = r.cfg, r.command, r.trainer, r.prepared
    student = trainer.student.eval()
    tta = cfg.data.tta  # test-time augmentation: the final evaluation only
    fill = cfg.data.augment_pad_mode  # its shifted views fill as training's translations
    test = (trainer.evaluate(student, prepared.data.test, tta, fill) if trainer.use_test
            else {"acc": None})
    val = (trainer.evaluate(student, prepared.data.val, tta, fill)
           if prepared.data.val is not None else None)
    model_cfg = cfg.model if command == "train" else cfg.student
    write = trainer.dist.is_main
    if write:
        save_weights({"model": model_cfg.name, "batchnorm": model_cfg.batchnorm,
                      "maxout": dataclasses.asdict(MaxoutOptions.of(model_cfg)),
                      "num_classes": prepared.num_classes,
                      "input_shape": list(prepared.input_shape),
                      "state_dict": student.state_dict(),
                      "preprocess": prepared.preprocess.state_dict(),
                      # a sized model's (gpt) width, depth, heads and context, to rebuild it
                      **({"sizes": dict(student.sizes)} if hasattr(student, "sizes") else {}),
                      # token ids: whose (a teacher's vocabulary is checked against it)
                      **({"tokenizer": tokenizer_id(cfg.data.tokenizer)}
                         if cfg.data.name == "text" else {}),
                      **({"objective": "masked"} if prepared.masking is not None else {})},
                     r.run_dir / "model.pt")
    history = trainer.history
    summary = {
        "command": command,
        "method": "train" if command == "train" else cfg.method,
        "dataset": prepared.dataset,
        "model": model_cfg.name,
        "teacher": cfg.teacher.name if r.teacher is not None else None,
        "params": sum(p.numel() for p in student.parameters()),
        # multiplications per image, counted on the trained network itself: a report can
        # then show a user's model, whose file it may not be able to rebuild
        "mults": _mults(student, prepared.input_shape),
        "test_acc": test["acc"],
        "test_error": None if test["acc"] is None else 1.0 - test["acc"],
        "val_acc": None if val is None else val["acc"],
        "stages": history["stages"],
        "epochs": {s["name"]: s["epochs"] for s in history["stages"]},
        "wall_time_s": round(trainer.elapsed, 2),
        "seed": cfg.seed,
        # a stage that ended at chance (fitnets/stall.py's last verdict): a failure, never a
        # result; the CLI exits with FAILED_TO_LEARN
        "stalled": any(s.get("stalled", False) for s in history["stages"]),
    }
    if "ppl" in test or (val is not None and "ppl" in val):
        # a language model: test_acc / val_acc are next-token accuracies; perplexity is
        # exp(mean token loss), beside the training split's unigram one (the chance level)
        summary.update(test_ppl=test.get("ppl"), val_ppl=None if val is None else val["ppl"],
                       test_loss=test.get("loss"),
                       unigram_ppl=getattr(prepared.data, "unigram_ppl", None))
        if prepared.masking is not None:  # of the masked tokens (fixed masks, data/text.py)
            summary["objective"] = "masked"
    if tta != "none":  # test_acc and val_acc are then the augmented ones
        summary["tta"] = tta
    if write:
        atomic_write(r.run_dir / "summary.json", json.dumps(summary, indent=2).encode())
    if prepared.data.skipped:
        r.say(f"skipped {prepared.data.skipped} reads of unreadable images (data.skip_bad_images)")
    score = (f"test accuracy {100 * test['acc']:.2f}%" if test["acc"] is not None
             else f"validation accuracy {100 * val['acc']:.2f}% (test set not used)")
    if summary.get("test_ppl") is not None:
        what = "masked-token" if prepared.masking is not None else "next-token"
        score = (f"test {'masked-token ' if prepared.masking is not None else ''}perplexity "
                 f"{summary['test_ppl']:.3f} (unigram "
                 f"{summary['unigram_ppl'] or float('nan'):.3f}), {what} {score}")
    if tta != "none":
        score += f" with {tta} test-time augmentation"
    r.say(f"done: {score} ({summary['params']:,} parameters); "
          f"wrote {r.run_dir / 'summary.json'}")
    for s in history["stages"]:
        if s.get("stalled"):
            step = s.get("stalled_step")  # absent from a stage judged before issue 31
            r.say(f"warning: this run FAILED to learn: stage {s['name']} ended stalled at "
                  f"chance (since epoch {s['stalled_epoch']}"
                  + ("" if step is None else f", step {step:,}") + "; see the warnings "
                  "above); summary.json says stalled: true.")
        elif s.get("slow_start"):
            r.say(f"note: stage {s['name']} started slowly: it left chance at step "
                  f"{s['left_chance_step']:,} / epoch {s['left_chance_epoch']} (summary.json: "
                  "slow_start).")
    return summary
