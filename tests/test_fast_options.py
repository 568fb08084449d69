"""The training options the fast CIFAR teacher needs (issue 32): label smoothing, the
triangle schedule, weight decay that ignores lr scales, lookahead, alternating flips and
test-time augmentation; each off by default, and each checked against values worked out by
hand from its formula."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from fitnets import FitnetsError
from fitnets.checkpoint import load_weights
from fitnets.config import OptimConfig, StageConfig, make_config
from fitnets.data.augment import alternating_flips, tta_logits
from fitnets.data.memory import Arrays, Batch, Data
from fitnets.distill.stages import LabelStage
from fitnets.optim import Lookahead, make_optimizer, make_schedule, triangle
from fitnets.run import run


def test_every_new_option_is_off_by_default():
    cfg = make_config(None)
    for stage in (cfg.train, cfg.hints.stage):
        assert stage.label_smoothing == 0.0
        o = stage.optim
        assert (o.lookahead, o.scale_decay, o.schedule) == (0, True, "constant")
    assert cfg.data.augment_flip is False and cfg.data.tta == "none"
    assert cfg.data.augment_pad_mode == "zeros"


@pytest.mark.parametrize("override,words", [
    ("train.optim.triangle=[0.2,1.5,0.1]", "triangle"),
    ("train.optim.triangle=[0.2,0.5]", "triangle"),
    ("train.label_smoothing=1.0", "label_smoothing"),
    ("train.optim.lookahead=-1", "lookahead"),
    ("data.tta=flips", "Did you mean 'flip'"),
    ("data.augment_flip=alternating", "Did you mean 'alternate'"),
    ("data.augment_pad_mode=reflection", "Did you mean 'reflect'"),
])
def test_bad_values_are_named(override, words):
    with pytest.raises(FitnetsError, match=words):
        make_config(None, [override])


def test_augment_flip_still_reads_yaml_booleans():
    assert make_config(None, ["data.augment_flip=on"]).data.augment_flip is True
    assert make_config(None, ["data.augment_flip=alternate"]).data.augment_flip == "alternate"


def test_triangle_by_hand():
    # 100 steps, start 0.2, peak at step 23, end 0.07
    assert triangle(0, 100, 0.2, 0.23, 0.07) == pytest.approx(0.2)
    assert triangle(10, 100, 0.2, 0.23, 0.07) == pytest.approx(0.2 + 0.8 * 10 / 23)
    assert triangle(23, 100, 0.2, 0.23, 0.07) == pytest.approx(1.0)
    assert triangle(50, 100, 0.2, 0.23, 0.07) == pytest.approx(1 - 0.93 * 27 / 77)
    assert triangle(100, 100, 0.2, 0.23, 0.07) == pytest.approx(0.07)
    assert triangle(1, 1, 0.2, 0.5, 0.0) == pytest.approx(1.0)  # one step: no division by 0


def test_the_triangle_schedule_is_stepped_per_optimiser_step():
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=2.0)
    sched = make_schedule(opt, OptimConfig(schedule="triangle", lr=2.0), epochs=2,
                          steps_per_epoch=5)
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(10):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    # 10 steps, peak at int(0.23 * 10) = 2
    assert lrs[:3] == pytest.approx([0.4, 1.2, 2.0])
    assert lrs[-1] == pytest.approx(2.0 * 0.07)


@pytest.mark.parametrize("scale_decay,expected", [(True, 1 - 6.4 * 0.01),
                                                  (False, 1 - 6.4 * 0.01 / 64)])
def test_scale_decay_false_keeps_the_decay_per_step_whatever_the_lr_scale(scale_decay, expected):
    p = nn.Parameter(torch.ones(1))
    p.grad = torch.zeros(1)  # only the decay moves it: p -= lr * scale * wd' * p
    cfg = OptimConfig(name="sgd", lr=0.1, weight_decay=0.01, scale_decay=scale_decay)
    opt = make_optimizer([{"params": [p], "scale": 64.0}], cfg)
    opt.step()
    assert p.item() == pytest.approx(expected)


def test_lookahead_by_hand():
    net = nn.BatchNorm1d(1)  # a weight (1 at the start) and bias, two float buffers, an int one
    look = Lookahead(net, every=2, total=4, decay=0.5)
    assert len(look.ema) == 4  # num_batches_tracked is not averaged
    look.step()  # step 1: nothing
    with torch.no_grad():
        net.weight.fill_(3.0)  # as if the optimiser had moved it
    look.step()  # step 2: rho = 0.5^2 * (2/4)^3 = 1/32
    assert net.weight.item() == pytest.approx(1 / 32 * 1 + 31 / 32 * 3)
    first = net.weight.item()
    with torch.no_grad():
        net.weight.fill_(5.0)
    saved = look.state_dict()
    look.step()
    look.step()  # step 4: rho = 0.25 * 1
    assert net.weight.item() == pytest.approx(0.25 * first + 0.75 * 5)
    with torch.no_grad():
        net.weight.fill_(7.0)
    look.sync()  # an epoch's end: w = ema
    assert net.weight.item() == pytest.approx(0.25 * first + 0.75 * 5)
    again = Lookahead(net, every=2, total=4, decay=0.5)
    again.load_state_dict(saved)
    assert again.steps == 2 and again.ema[0].item() == pytest.approx(first)


def test_label_smoothing_by_hand():
    net = nn.Linear(1, 2, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[math.log(3)], [0.0]]))  # x=1: p = (0.75, 0.25)
    x, y = torch.ones(1, 1), torch.zeros(1, dtype=torch.long)
    data = Data(Arrays(x, y), None, Arrays(x, y), 1, 1)
    stage = LabelStage("train", net, StageConfig(label_smoothing=0.2), data)
    loss, _ = stage.loss(Batch(x, y))
    # target (0.9, 0.1): -(0.9 ln 0.75 + 0.1 ln 0.25)
    assert loss.item() == pytest.approx(-(0.9 * math.log(0.75) + 0.1 * math.log(0.25)))
    plain, _ = LabelStage("train", net, StageConfig(), data).loss(Batch(x, y))
    assert plain.item() == pytest.approx(-math.log(0.75))


def test_alternating_flips_show_every_image_both_ways_every_two_epochs():
    rows = torch.arange(45_000)
    odd, even = alternating_flips(rows, 1), alternating_flips(rows, 2)
    assert torch.equal(odd, ~even) and torch.equal(odd, alternating_flips(rows, 3))
    assert abs(odd.float().mean().item() - 0.5) < 0.01  # half of them each epoch
    assert torch.equal(alternating_flips(rows[7:9], 1), odd[7:9])  # by row, not by position


def test_the_in_memory_loop_mirrors_by_row_and_epoch():
    x = torch.arange(8 * 2 * 2, dtype=torch.float32).view(8, 1, 2, 2)
    y = torch.zeros(8, dtype=torch.long)
    data = Data(Arrays(x, y), None, Arrays(x, y), 3, 8, alternate_flips=True)
    g = torch.Generator().manual_seed(0)
    for epoch in (1, 2):
        for b in data.train_batches(g, epoch=epoch):
            assert torch.equal(b.flipped, alternating_flips(b.idx, epoch))
            want = torch.where(b.flipped[:, None, None, None], x[b.idx].flip(-1), x[b.idx])
            assert torch.equal(b.x, want)


def test_alternating_flips_refuse_streamed_data():
    from torch.utils.data import TensorDataset

    from fitnets.data.prepare import prepare_python

    ds = TensorDataset(torch.zeros(4, 3, 8, 8), torch.zeros(4, dtype=torch.long))
    cfg = make_config(None, ["data.augment_flip=alternate"])
    with pytest.raises(FitnetsError, match="in memory"):
        prepare_python({"train": ds, "test": ds}, cfg.data, torch.device("cpu"))


def test_tta_by_hand():
    def model(v):  # the "logits": the left column of the one-channel 2x2 image
        return v[:, 0, :, 0]

    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    assert torch.equal(tta_logits(model, x, "none"), torch.tensor([[1.0, 3.0]]))
    assert torch.allclose(tta_logits(model, x, "flip"), torch.tensor([[1.5, 3.5]]))
    # shifted down-right: [[0,0],[0,1]] and its mirror -> left columns (0,0), (0,1);
    # shifted up-left: [[4,0],[0,0]] and its mirror -> (4,0), (0,0)
    # 1/2 (1.5, 3.5) + 1/8 ((0,0) + (0,1) + (4,0) + (0,0)) = (1.25, 1.875)
    assert torch.allclose(tta_logits(model, x, "flip_shift"), torch.tensor([[1.25, 1.875]]))
    # reflect (airbench's): padded [[4,3,4,3],[2,1,2,1],[4,3,4,3],[2,1,2,1]]; both shifts
    # read [[4,3],[2,1]], mirrored [[3,4],[1,2]] -> left columns (4,2) and (3,1) twice:
    # 1/2 (1.5, 3.5) + 1/8 (14, 6) = (2.5, 2.5)
    assert torch.allclose(tta_logits(model, x, "flip_shift", "reflect"),
                          torch.tensor([[2.5, 2.5]]))


def test_options_resume_bit_exact_inside_an_epoch(tmp_path, monkeypatch):
    """Lookahead's average and the per-step schedule live in the checkpoint: a run killed
    inside an epoch and resumed ends as the uninterrupted one."""
    from test_run import run_killed_after_save

    args = ["device=cpu", "data.name=digits", "data.train_limit=96", "data.val_size=40",
            "data.test_limit=40", "data.batch_size=32", "student.name=digits_student",
            "method=backprop", "train.epochs=2", "checkpoint_steps=2", "train.optim.name=sgd",
            "train.optim.lr=0.05", "train.optim.momentum=0.85", "train.optim.nesterov=true",
            "train.optim.schedule=triangle", "train.optim.lookahead=3",
            "train.label_smoothing=0.2", "data.augment_pad=1", "data.augment_flip=alternate",
            "data.augment_pad_mode=reflect", "data.tta=flip_shift"]
    ref = tmp_path / "ref"
    a = run(make_config(None, args), "distill", ref, verbose=False)
    cut = tmp_path / "cut"
    run_killed_after_save(monkeypatch, make_config(None, args), cut, 1)  # epoch 1, step 2
    b = run(make_config(cut / "config.yaml"), "distill", cut, resume=True, verbose=False)
    want, got = (load_weights(d / "model.pt")["state_dict"] for d in (ref, cut))
    assert all(torch.equal(want[k], got[k]) for k in want)
    for s in (a, b):
        s.pop("wall_time_s")
    assert a == b and a["tta"] == "flip_shift"
    records = [json.loads(line) for line in (ref / "metrics.jsonl").read_text().splitlines()]
    assert records[1]["lr"] == pytest.approx(0.05 * 0.07)  # the triangle's end: 6 steps done
