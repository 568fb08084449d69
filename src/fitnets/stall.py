"""A run that learned nothing says so: the guard every classifier stage runs after each epoch.

Found on a GPU (issue 23): the paper's CIFAR-10 FitNet-4 recipe stayed at 10% (chance) for
all 15 KD epochs while the loss crept down, and nothing said so. The guard watches the
held-out accuracy (validation, else test: it only warns or stops, it selects nothing) and
the train loss, counted in optimiser steps (issue 31: 3 epochs of a small data set are 30
steps, and students that sat at chance that long went on to 97%). Its verdict follows the
run: it is given only once the stage is ``ready`` (enough steps), holds while the stage
stays at chance, and is withdrawn when the stage leaves it (a slow start, not a stall); the
stage's last verdict is the run's. Its state is plain lists and lives in the stage's
checkpoint, so a resumed run judges the same epochs as an uninterrupted one.
"""

from __future__ import annotations

import math

# When the guard may judge, measured on recorded runs (benchmarks/results/stall-guard.md, by
# benchmarks/stall_guard.py). Stages that sat at chance from their start, then learned:
#   run                                   steps/epoch  at chance for       then
#   MNIST backprop, 1e-5 floor, seed 0,   391          3,910 steps (50%)   91.2% test
#     Xeon (README; files lost)                        10 of 20 epochs
#   MNIST teacher (ablation/floor)        391          1,955 steps (12%)   99.3% val
#   CIFAR-10 slice backprop4              313            626 steps (67%)   20.9% val
#   digits distill, 15 KD epochs          11              88 steps (53%)   30.6% val
#   fitnets demo KD / backprop students   23         138 / 69 steps        96.9% / 97.5% test
# The stalls stayed at chance for their whole stage: MNIST backprop 1e-5 seed 0 (AMD, 7,820
# steps), the H200 FitNet-4 KD stage (4,700), the CIFAR-10 escape slices with the authors'
# init (1,256) and teacher at the 1e-5 floor (126). Each bound alone (5,000 steps > 3,910;
# 75% > 67%) keeps every learner from a verdict while it was at chance; every stall is still
# caught: the 7,820-step one at step 5,865 (epoch 15), shorter stages at their end.
MIN_STEPS = 5000  # optimiser steps of a stage before any verdict (a shorter stage: its end)
MIN_FRACTION = 0.75  # ... and this fraction of the stage's steps; a chance verdict also needs
#                      the accuracy at chance for this share of the steps so far
MARGIN = 0.02  # accuracy within 2 points of chance (perplexity: 2% of it) counts as chance
LOSS_RTOL = 1e-3  # a train loss that never moved by more than this, relative, since epoch 1
ACCURACY, PERPLEXITY = "accuracy", "perplexity"  # what the guard watches (held_out): a
#   classifier's held-out accuracy against 1/classes (or the majority class), a language
#   model's held-out perplexity against the training split's unigram perplexity


def ready(steps_done: int, stage_steps: int) -> bool:
    """True once the guard may give a verdict: ``steps_done`` optimiser steps of a stage of
    ``stage_steps`` are at least ``MIN_STEPS`` and ``MIN_FRACTION`` of the stage (a stage
    shorter than ``MIN_STEPS`` is judged at its end only)."""
    return steps_done >= min(stage_steps, max(MIN_STEPS, math.ceil(MIN_FRACTION * stage_steps)))


def chance_level(counts: list[float]) -> float:
    """The accuracy of always answering one class, from the labels' per-class counts (every
    class of the model, seen or not): 1/classes, or the majority class's rate when that is
    higher (an unbalanced split)."""
    total = sum(counts)
    if not counts or total == 0:
        return 0.0
    return max(1.0 / len(counts), max(counts) / total)


def new_state() -> dict:
    """The guard's state: per epoch the held-out accuracy, train loss and the stage's steps
    done at its end; the chance level; the verdict now (``epoch``/``step`` it was given,
    ``why``: chance or flat; None when none holds) and ``left``, where a stage at chance
    from its start first left it ({"epoch", "step"}; None)."""
    return {"accs": [], "losses": [], "steps": [], "chance": None, "metric": ACCURACY,
            "epoch": None, "step": None, "why": None, "left": None}


def restore(state: dict | None, steps_per_epoch: int) -> dict:
    """The guard's state from a checkpoint; one written before steps were counted (epochs
    only) gets each epoch's steps from ``steps_per_epoch``."""
    if state is None:
        return new_state()
    out = {**new_state(), **state}
    if len(out["steps"]) != len(out["accs"]):
        out["steps"] = [steps_per_epoch * (i + 1) for i in range(len(out["accs"]))]
    return out


def held_out(metrics: dict) -> tuple[float | None, str]:
    """What the guard watches in a stage's metrics, and its kind: a language model's held-out
    perplexity (validation, else test), else the held-out accuracy."""
    for key in ("val_ppl", "test_ppl"):
        if key in metrics:
            return metrics[key], PERPLEXITY
    return metrics.get("val_acc", metrics.get("test_acc")), ACCURACY


def _at_chance(value: float | None, chance: float, metric: str = ACCURACY) -> bool:
    """Accuracy within MARGIN (points) of chance, or perplexity within MARGIN (relative) of
    the unigram one."""
    if value is None:
        return False
    if metric == PERPLEXITY:
        return value >= chance * (1 - MARGIN)
    return value <= chance + MARGIN


def _verdict(state: dict, stage_steps: int) -> str | None:
    """chance, flat or None: the verdict on the epochs so far of a stage of ``stage_steps``."""
    steps, accs, losses = state["steps"], state["accs"], state["losses"]
    done = steps[-1]
    if not ready(done, stage_steps):
        return None
    chance, metric = state["chance"], state["metric"]
    streak = 0  # epochs at chance, counted back from the last
    while streak < len(accs) and _at_chance(accs[-1 - streak], chance, metric):
        streak += 1
    if streak:
        since = steps[-1 - streak] if streak < len(accs) else 0
        if done - since >= MIN_FRACTION * done:
            return "chance"
    if len(losses) >= 2 and all(v is not None for v in losses):
        hi, lo = max(losses), min(losses)
        if hi > 1e-8 and hi - lo <= LOSS_RTOL * hi:
            return "flat"
    return None


def update(state: dict, epoch: int, acc: float | None, loss: float | None, chance: float,
           steps_done: int, stage_steps: int, final: bool = False,
           metric: str = ACCURACY) -> str | None:
    """Add one epoch (its end: ``steps_done`` optimiser steps of the stage's ``stage_steps``;
    ``final``: the stage ends here, e.g. by early stopping, so it is judged on the steps it
    ran). Returns what changed: "stalled" (a verdict is given now), "left" (the stage has
    just left chance after starting at it: a slow start; a verdict it had is withdrawn),
    "cleared" (a verdict withdrawn otherwise: the loss moved), or None.

    Stalled, once ``ready(steps_done, stage_steps)``: the held-out accuracy is within
    ``MARGIN`` of ``chance`` and has been for at least ``MIN_FRACTION`` of the steps so far,
    or the train loss (two epochs or more) has not moved by ``LOSS_RTOL`` since epoch 1.
    ``metric=perplexity``: ``acc`` is a held-out perplexity and ``chance`` the unigram one
    (at chance: within ``MARGIN`` of it, relative).
    """
    state["metric"] = metric
    state["accs"].append(acc)
    state["losses"].append(loss)
    state["steps"].append(steps_done)
    state["chance"] = chance
    had = state["epoch"] is not None
    why = _verdict(state, steps_done if final else stage_steps)
    if why is not None:
        state["why"] = why  # a verdict that holds keeps the epoch and step it was given at
        if had:
            return None
        state["epoch"], state["step"] = epoch, steps_done
        return "stalled"
    state["epoch"] = state["step"] = state["why"] = None
    accs = state["accs"]
    if (state["left"] is None and len(accs) >= 2 and not _at_chance(acc, chance, metric)
            and all(_at_chance(a, chance, metric) for a in accs[:-1])):
        state["left"] = {"epoch": epoch, "step": steps_done, "withdrawn": had}
        return "left"
    return "cleared" if had else None


def result(state: dict) -> dict:
    """The stage's entry in summary.json from the guard's last verdict: stalled with its
    epoch, step and cause, or a slow start with where it left chance; {} otherwise."""
    if state["epoch"] is not None:
        return {"stalled": True, "stalled_epoch": state["epoch"],
                "stalled_step": state["step"], "stalled_why": state["why"]}
    if state["left"] is not None:
        return {"slow_start": True, "left_chance_epoch": state["left"]["epoch"],
                "left_chance_step": state["left"]["step"]}
    return {}


def advice(stage: str, optim, after_hints: bool) -> str:
    """The likely causes of a stall, with the keys to change, from the stage's optimiser
    settings (``optim``: an OptimConfig) and whether hint stages came first."""
    key = "train.optim"
    causes = []
    if optim.name == "rmsprop_pylearn2" and optim.rmsprop_floor >= 1e-6:
        causes.append(
            f"the authors' RMSProp floor ({key}.rmsprop_floor={optim.rmsprop_floor:g}) with a "
            "tiny initialisation: a deep net's gradients are then far below the floor, so a "
            "step is lr * g / floor and only the top layer moves; set "
            f"{key}.rmsprop_floor=1e-8 or {key}.name=rmsprop")
    if after_hints:
        causes.append("a dead regressor in the hint stage (see its warning), which leaves "
                      "the guided layers giving constant outputs")
    causes.append(f"a learning rate too high or too low for this net (now {key}.lr="
                  f"{optim.lr:g}); try a tenth or ten times it")
    return f"[{stage}] likely causes: " + "; ".join(causes) + "."


def describe(state: dict, stage: str, event: str) -> str:
    """The line for an ``update`` event: a warning for "stalled", a note for "left" (a slow
    start) and "cleared" (a verdict withdrawn)."""
    chance, metric = state["chance"], state.get("metric", ACCURACY)
    ppl = metric == PERPLEXITY

    def shown(v: float) -> str:
        return f"{v:.2f}" if ppl else f"{100 * v:.2f}%"

    what = "held-out perplexity" if ppl else "held-out accuracy"
    if event == "left":
        left = state["left"]
        at = left["epoch"] - 1
        return (f"note: [{stage}] left chance at step {left['step']:,} / epoch {left['epoch']} "
                f"({what} {shown(state['accs'][-1])}, chance "
                f"{shown(chance)}{' (unigram)' if ppl else ''}) after {at} epoch(s) at "
                "chance: a slow start, not a "
                "stall" + ("; the STALLED warning above is withdrawn." if left["withdrawn"]
                           else "."))
    if event == "cleared":
        return (f"note: [{stage}] the STALLED warning above is withdrawn at epoch "
                f"{len(state['accs'])}: the stage is learning again.")
    steps = state["steps"][-1]
    if state["why"] == "chance":
        accs = state["accs"]
        streak = next((i for i, a in enumerate(reversed(accs))
                       if not _at_chance(a, chance, metric)), len(accs))
        since = len(accs) - streak + 1
        # at chance is one-sided (_at_chance): worse than chance counts too, so the message
        # says "no better than", never "within", of a perplexity far above the unigram one
        near = (f"no more than {100 * MARGIN:.0f}% below the unigram perplexity "
                f"({chance:.2f})" if ppl else
                f"no more than {100 * MARGIN:.0f} points above chance ({100 * chance:.2f}%)")
        return (f"warning: [{stage}] STALLED at epoch {state['epoch']} (step {steps:,}): "
                f"{what} {shown(accs[-1])} has stayed {near} since epoch "
                f"{since}: the network is not learning.")
    first, last = state["losses"][0], state["losses"][-1]
    return (f"warning: [{stage}] STALLED at epoch {state['epoch']} (step {steps:,}): the train "
            f"loss has not moved since epoch 1 ({first:.6g} -> {last:.6g}): the network is "
            "not learning.")
