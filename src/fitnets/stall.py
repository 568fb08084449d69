"""A run that learned nothing says so: the guard every classifier stage runs after each epoch.

Found on a GPU (issue 23): the paper's CIFAR-10 FitNet-4 recipe stayed at 10% (chance) for
all 15 KD epochs while the loss crept down, and nothing said so. The guard watches the
held-out accuracy (validation, else test: it only warns or stops, it selects nothing) and
the train loss; its state is plain lists and lives in the stage's checkpoint, so a resumed
run judges the same epochs as an uninterrupted one.
"""

from __future__ import annotations

WINDOW = 3  # epochs at chance before a stage counts as stalled (fewer if the stage is shorter)
MARGIN = 0.02  # accuracy within 2 points of chance counts as chance
LOSS_RTOL = 1e-3  # a train loss that never moved by more than this, relative, since epoch 1
MIN_STEPS = 1000  # optimiser steps before any verdict (provisional; measured below)
MIN_FRACTION = 0.5  # ... and this fraction of the stage's steps


def ready(steps_done: int, stage_steps: int) -> bool:
    """True once the guard may give a verdict: ``steps_done`` optimiser steps of a stage of
    ``stage_steps`` are at least ``MIN_STEPS`` and ``MIN_FRACTION`` of the stage (a stage
    shorter than ``MIN_STEPS`` is judged at its end only)."""
    return steps_done >= min(stage_steps, max(MIN_STEPS, MIN_FRACTION * stage_steps))


def chance_level(counts: list[float]) -> float:
    """The accuracy of always answering one class, from the labels' per-class counts (every
    class of the model, seen or not): 1/classes, or the majority class's rate when that is
    higher (an unbalanced split)."""
    total = sum(counts)
    if not counts or total == 0:
        return 0.0
    return max(1.0 / len(counts), max(counts) / total)


def new_state() -> dict:
    """The guard's state: per-epoch accuracies and losses seen, and the stalled epoch."""
    return {"accs": [], "losses": [], "epoch": None, "why": None}


def update(state: dict, epoch: int, acc: float | None, loss: float | None, chance: float,
           epochs: int) -> bool:
    """Add one epoch; True when the stage has just stalled (at most once per stage).

    Stalled: the last ``min(WINDOW, epochs)`` accuracies were all within ``MARGIN`` of
    ``chance``, or, after at least two epochs, the train loss has not moved since epoch 1.
    """
    state["accs"].append(acc)
    state["losses"].append(loss)
    if state["epoch"] is not None:
        return False
    window = max(1, min(WINDOW, epochs))
    recent = state["accs"][-window:]
    if len(recent) == window and all(a is not None and a <= chance + MARGIN for a in recent):
        state["epoch"], state["why"] = epoch, "chance"
        return True
    losses = state["losses"]
    if len(losses) >= max(2, window) and all(v is not None for v in losses):
        hi, lo = max(losses), min(losses)
        if hi > 1e-8 and hi - lo <= LOSS_RTOL * hi:
            state["epoch"], state["why"] = epoch, "flat"
            return True
    return False


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


def describe(state: dict, stage: str, chance: float) -> str:
    """The warning line for a stalled stage."""
    n = min(WINDOW, len(state["accs"]))
    if state["why"] == "chance":
        acc = state["accs"][-1]
        return (f"[{stage}] STALLED at epoch {state['epoch']}: held-out accuracy "
                f"{100 * acc:.2f}% has stayed within {100 * MARGIN:.0f} points of chance "
                f"({100 * chance:.2f}%) for {n} epoch(s): the network is not learning.")
    first, last = state["losses"][0], state["losses"][-1]
    return (f"[{stage}] STALLED at epoch {state['epoch']}: the train loss has not moved since "
            f"epoch 1 ({first:.6g} -> {last:.6g}): the network is not learning.")
