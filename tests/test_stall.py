"""The stall guard: a classifier stage at chance is said, recorded and reported (issue 23)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from fitnets import stall
from fitnets.config import make_config
from fitnets.report import load_run, seed_table
from fitnets.run import run


def test_chance_is_one_over_classes_or_the_majority_rate():
    def counts(y, classes=0):  # what Trainer.evaluate sums over the batches (and ranks)
        return torch.bincount(torch.tensor(y), minlength=classes).tolist()

    assert stall.chance_level(counts(list(range(10)) * 3)) == pytest.approx(0.1)
    # 6 of 10 labels are class 2: always answering 2 scores 60%
    assert stall.chance_level(counts([2] * 6 + [0, 1, 3, 4])) == pytest.approx(0.6)
    # classes absent from the labels still count: 1/100 < the majority's 1/2
    assert stall.chance_level(counts([0, 1], classes=100)) == pytest.approx(0.5)
    # 3 classes, the third absent: always answering one of the two scores 1/2
    assert stall.chance_level([5.0, 5.0, 0.0]) == pytest.approx(0.5)
    assert stall.chance_level([]) == 0.0


def _feed(accs, losses, epochs):
    state = stall.new_state()
    hits = [stall.update(state, e, a, v, 0.1, epochs)
            for e, (a, v) in enumerate(zip(accs, losses), 1)]
    return state, hits


def test_three_epochs_at_chance_stall_once_and_learning_does_not():
    state, hits = _feed([0.10, 0.115, 0.119, 0.10, 0.5], [2.3, 2.2, 2.1, 2.0, 1.0], epochs=10)
    assert hits == [False, False, True, False, False]  # said once, at epoch 3
    assert (state["epoch"], state["why"]) == (3, "chance")
    # 12.1% is beyond the 2-point margin: the window restarts
    state, hits = _feed([0.10, 0.121, 0.10, 0.11, 0.5], [2.3, 2.2, 2.1, 2.0, 1.9], epochs=10)
    assert hits == [False, False, False, False, False] and state["epoch"] is None
    state, _ = _feed([0.3, 0.6, 0.9], [2.0, 1.0, 0.5], epochs=3)
    assert state["epoch"] is None


def test_a_stage_shorter_than_the_window_that_ends_at_chance_stalls():
    state, hits = _feed([0.10], [2.3], epochs=1)
    assert hits == [True] and state["epoch"] == 1
    state, hits = _feed([0.4, 0.1], [2.3, 2.2], epochs=2)  # it learned, then fell back
    assert hits == [False, False]


def test_a_train_loss_that_never_moved_stalls_even_above_chance():
    # 2.302585 -> 2.3026 over 3 epochs (relative change 7e-6 < 1e-3), accuracy 30% from a
    # lucky class
    state, hits = _feed([0.3] * 3, [2.302585, 2.3026, 2.30259], epochs=5)
    assert hits == [False, False, True] and state["why"] == "flat"
    state, hits = _feed([0.3] * 2, [2.302585, 2.3026], epochs=2)  # a 2-epoch stage: 2 do
    assert hits == [False, True]
    state, _ = _feed([0.3] * 3, [2.30, 2.25, 2.30], epochs=5)
    assert state["epoch"] is None


def test_advice_names_the_pylearn2_floor_and_the_keys():
    authors = SimpleNamespace(name="rmsprop_pylearn2", rmsprop_floor=1e-5, lr=0.005)
    text = stall.advice("kd", authors, after_hints=True)
    assert "train.optim.rmsprop_floor=1e-8" in text and "train.optim.name=rmsprop" in text
    assert "dead regressor" in text and "train.optim.lr=0.005" in text
    plain = stall.advice("backprop", SimpleNamespace(name="sgd", rmsprop_floor=1e-5, lr=0.1),
                         after_hints=False)
    assert "floor" not in plain and "regressor" not in plain and "lr=0.1" in plain


BASE = ["device=cpu", "data.name=mnist", "data.download=false", "data.val_size=40",
        "data.batch_size=32", "model.name=mnist_student", "train.optim.name=sgd"]


def test_a_run_with_lr_1e12_warns_and_says_stalled_everywhere(tiny_mnist, tmp_path, capsys):
    out = tmp_path / "stuck"
    summary = run(make_config(None, [*BASE, f"data.root={tiny_mnist}", "train.optim.lr=1e-12",
                                     "train.epochs=4"]), "train", out, verbose=True)
    said = capsys.readouterr()
    text = said.out + said.err
    assert "STALLED at epoch 3" in text and "likely causes" in text
    assert "this run FAILED to learn" in text
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("stalled", False) for r in records] == [False, False, True, True]
    assert summary["stalled"] is True
    assert json.loads((out / "summary.json").read_text())["stages"][0]["stalled_epoch"] == 3
    rec = load_run(out)
    assert rec.stalled == "train epoch 3" and rec.status.startswith("STALLED at chance")


def test_on_stall_stop_ends_the_stage_and_tables_do_not_average_it(tiny_mnist, tmp_path):
    args = [*BASE, f"data.root={tiny_mnist}", "train.epochs=6", "train.on_stall=stop"]
    stuck = tmp_path / "s0"
    summary = run(make_config(None, [*args, "train.optim.lr=1e-12", "seed=0"]), "train", stuck,
                  verbose=False)
    assert summary["epochs"] == {"train": 3} and summary["stalled"] is True
    learned = tmp_path / "s1"
    summary = run(make_config(None, [*args, "seed=1",
                                     "train.optim.name=adam", "train.optim.lr=0.003",
                                     "model.init=torch"]),
                  "train", learned, verbose=False)
    assert summary["stalled"] is False and summary["test_acc"] > 0.5
    table = seed_table([load_run(stuck), load_run(learned)])
    # different optimisers: not one seed group; the same config twice is
    assert "No runs that differ only by seed" in table
    again = tmp_path / "s2"
    run(make_config(None, [*args, "train.optim.lr=1e-12", "seed=2"]), "train", again,
        verbose=False)
    table = seed_table([load_run(stuck), load_run(again)])
    assert "| 0 | - | - | s0 (seed 0), s2 (seed 2) |" in table


def test_the_summary_names_one_epoch_for_best_weights_and_test_accuracy(tiny_mnist, tmp_path):
    out = tmp_path / "run"
    summary = run(make_config(None, [*BASE, f"data.root={tiny_mnist}", "train.epochs=5",
                                     "train.optim.name=adam", "train.optim.lr=0.003",
                                     "model.init=torch", "train.patience=0"]), "train", out,
                  verbose=False)
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    stage = summary["stages"][0]
    best = min(records, key=lambda r: (r["val_error"], r["epoch"]))
    assert stage["best_epoch"] == stage["weights_epoch"] == best["epoch"]
    assert summary["test_acc"] == best["test_acc"]  # model.pt holds that epoch's weights
