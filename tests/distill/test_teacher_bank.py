"""The teacher bank (issue 32, item 2): the teacher's outputs for every view augmentation can
show (flips x translation offsets), looked up by (view, row). Augmentation reports each
image's view; the bank equals the teacher run inline on the same augmented batch; auto's
choices; a killed build resumes; a corrupt file is rebuilt; runs share a disk bank."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from fitnets.checkpoint import load_weights
from fitnets.config import make_config
from fitnets.data.augment import (
    alternating_flips,
    apply_view,
    augment_with_flips,
    split_view,
    view_count,
)
from fitnets.data.memory import Arrays, Data
from fitnets.distill import teacher_cache
from fitnets.distill.taps import run_to
from fitnets.distill.teacher import LOGITS, Teacher, cached
from fitnets.distill.teacher_cache import build_teacher_cache, partial, sidecar
from fitnets.perf import FP32, Perf
from fitnets.run import run


def _net(channels: int = 3) -> nn.Module:
    """A tiny convolutional teacher (eval mode: each image's output is its own)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(channels, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                        nn.Conv2d(6, 8, 3, padding=1, stride=2), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 10))
    with torch.no_grad():  # batch-norm statistics that are not the identity
        net[1].running_mean.uniform_(-0.2, 0.2)
        net[1].running_var.uniform_(0.5, 2.0)
    return net.eval().requires_grad_(False)


def _build(net, x, *, pad, flips, mode="memory", perf=FP32, epochs=None, fn=None,
           batch_size=4, fill="zeros"):
    msgs: list[str] = []
    cache = build_teacher_cache(fn or net, net, x, what=LOGITS, flips=flips, mode=mode,
                                perf=perf, batch_size=batch_size, say=msgs.append, pad=pad,
                                epochs=epochs, fill=fill)
    return cache, msgs


# --------------------------------------------------------------------------- views


@pytest.mark.parametrize("pad,flip", [(0, True), (1, False), (2, True), (3, True)])
def test_the_reported_view_reproduces_the_crop_and_the_draws_are_unchanged(pad, flip):
    x = torch.rand(64, 3, 8, 8)
    g = torch.Generator().manual_seed(7)
    out, view = augment_with_flips(x, g, pad=pad, flip=flip)
    assert view.dtype == torch.long and view.shape == (64,)
    assert torch.equal(apply_view(x, view, pad), out)  # the view says how it was cropped
    # the random stream is as before the views were reported: row offsets, column offsets,
    # flips, one draw of N each, in that order
    ref = torch.Generator().manual_seed(7)
    side = 2 * pad + 1
    dy = torch.randint(0, side, (64,), generator=ref) if pad else torch.zeros(64, dtype=int)
    dx = torch.randint(0, side, (64,), generator=ref) if pad else torch.zeros(64, dtype=int)
    fl = torch.randint(0, 2, (64,), generator=ref) if flip else torch.zeros(64, dtype=int)
    assert torch.equal(g.get_state(), ref.get_state())
    got = split_view(view, pad)
    assert all(torch.equal(a, b) for a, b in zip(got, (dy, dx, fl)))
    assert int(view.max()) // (1 if flip else 2) < view_count(pad, flip)  # a bank view
    # by hand: the offset crop of the zero-padded image, mirrored where flipped
    xp = torch.nn.functional.pad(x, (pad,) * 4)
    for i in (0, 5, 63):
        want = xp[i, :, dy[i]:dy[i] + 8, dx[i]:dx[i] + 8]
        assert torch.equal(out[i], want.flip(-1) if fl[i] else want)


def test_alternating_flips_and_translations_report_their_views():
    x = torch.rand(20, 3, 6, 6)
    y = torch.zeros(20, dtype=torch.long)

    def aug(v, g):
        return augment_with_flips(v, g, pad=1)

    data = Data(Arrays(x, y), None, Arrays(x, y), 8, 8, aug, alternate_flips=True)
    g = torch.Generator().manual_seed(0)
    for epoch in (1, 2):
        for b in data.train_batches(g, epoch=epoch):
            assert torch.equal(b.flipped, alternating_flips(b.idx, epoch))
            assert torch.equal(apply_view(x[b.idx], b.view, 1), b.x)


def test_reflected_views_reproduce_their_crops():
    x = torch.rand(32, 3, 8, 8)
    out, view = augment_with_flips(x, torch.Generator().manual_seed(1), pad=2, flip=True,
                                   fill="reflect")
    assert torch.equal(apply_view(x, view, 2, "reflect"), out)
    assert not torch.equal(apply_view(x, view, 2), out)  # zeros would show other borders
    xp = torch.nn.functional.pad(x, (2,) * 4, mode="reflect")  # by hand
    dy, dx, fl = split_view(view, 2)
    for i in (0, 9, 31):
        want = xp[i, :, dy[i]:dy[i] + 8, dx[i]:dx[i] + 8]
        assert torch.equal(out[i], want.flip(-1) if fl[i] else want)


def test_a_reflected_bank_has_its_own_key_and_zero_filled_keys_are_unchanged():
    net, x = _net(), torch.rand(6, 3, 8, 8)

    def key(**kw):
        return teacher_cache.cache_key(net, x, LOGITS, 50, FP32, **kw)

    assert key(pad=2, flips=True) == key(pad=2, flips=True, fill="zeros")
    assert key(pad=2, flips=True, fill="reflect") != key(pad=2, flips=True)
    # nothing to fill without translations: one bank either way
    assert key(pad=0, flips=True, fill="reflect") == key(pad=0, flips=True)


# --------------------------------------------------------------------------- lookups


def _batches(x, pad, flip, fill="zeros"):
    """Two epochs of augmented batches as a run draws them (flip: False, True, "alternate")."""
    y = torch.zeros(len(x), dtype=torch.long)
    random_flip = flip is True

    def aug(v, g):
        return augment_with_flips(v, g, pad=pad, flip=random_flip, fill=fill)

    data = Data(Arrays(x, y), None, Arrays(x, y), 7, 7, aug if pad or random_flip else None,
                alternate_flips=flip == "alternate")
    g = torch.Generator().manual_seed(3)
    return [b for epoch in (1, 2) for b in data.train_batches(g, epoch=epoch)]


@pytest.mark.parametrize("pad,flip,fill", [(1, True, "zeros"), (1, "alternate", "zeros"),
                                           (2, False, "zeros"), (0, True, "zeros"),
                                           (2, "alternate", "reflect")])
def test_fp32_bank_lookup_equals_the_teacher_inline(pad, flip, fill):
    net, x = _net(), torch.rand(18, 3, 8, 8)
    cache, msgs = _build(net, x, pad=pad, flips=bool(flip), fill=fill)
    assert len(cache.store) == view_count(pad, bool(flip)) * 18
    assert f"{view_count(pad, bool(flip))} view(s)" in msgs[0]
    assert ("reflected" in msgs[0]) == (fill == "reflect")
    for b in _batches(x, pad, flip, fill):
        with torch.no_grad():
            inline = net(b.x)
        torch.testing.assert_close(cached(cache, b.idx, b.view), inline, rtol=1e-5, atol=1e-6)


def test_bf16_bank_equals_the_teacher_inline_within_bf16_rounding():
    net, x = _net(), torch.rand(18, 3, 8, 8)
    perf = Perf(torch.device("cpu"), "bf16", True)
    perf.prepare(net)
    x = perf.layout(x)
    cache, _ = _build(net, x, pad=1, flips=True, perf=perf)
    assert cache.store.dtype == torch.bfloat16  # stored as the teacher produced it
    for b in _batches(x, 1, True)[:3]:
        with torch.no_grad(), perf.autocast():
            inline = net(perf.layout(b.x))
        assert inline.dtype == torch.bfloat16
        # within a bf16 rounding step (2^-8 relative) of the inline outputs
        torch.testing.assert_close(cached(cache, b.idx, b.view).float(), inline.float(),
                                   rtol=1 / 128, atol=1 / 128)


def test_a_hint_layer_bank_equals_its_inline_outputs():
    net, x = _net(), torch.rand(12, 3, 8, 8)

    def fn(v):
        return run_to(net, v, ["3"])[0]

    msgs: list[str] = []
    cache = build_teacher_cache(fn, net, x, what="3", flips=True, mode="memory", perf=FP32,
                                batch_size=5, say=msgs.append, pad=1)
    assert cache.store.shape == (18 * 12, 8, 4, 4)
    for b in _batches(x, 1, True)[:2]:
        with torch.no_grad():
            inline = fn(b.x)
        torch.testing.assert_close(cached(cache, b.idx, b.view), inline, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- auto


def test_auto_builds_a_bank_only_when_it_costs_no_more_than_inline(tmp_path, monkeypatch):
    monkeypatch.setenv("FITNETS_CACHE", str(tmp_path))
    net, x = _net(), torch.rand(10, 3, 8, 8)
    # 2 flips x 9 offsets = 18 views: 18 x 10 forwards against 10 epochs x 10
    cache, msgs = _build(net, x, pad=1, flips=True, mode="auto", epochs=10)
    assert cache is None and len(msgs) == 1
    assert "computed inline" in msgs[0] and "18 views" in msgs[0]
    assert "180 teacher forwards" in msgs[0] and "10 epoch(s)" in msgs[0]
    assert "perf.teacher_cache=disk" in msgs[0]  # how to build a shared bank
    cache, msgs = _build(net, x, pad=1, flips=True, mode="auto", epochs=18)  # as costly
    assert cache is not None and cache.path is None and "in memory" in msgs[0]
    assert not list(tmp_path.rglob("*.bin"))  # auto writes no disk bank for a small one
    # once a bank is on disk, auto uses it whatever the run's length
    disk, _ = _build(net, x, pad=1, flips=True, mode="disk")
    reused, msgs = _build(net, x, pad=1, flips=True, mode="auto", epochs=1)
    assert reused.path == disk.path and "reusing" in msgs[0]
    assert torch.equal(reused.store, disk.store)
    # another pad is another bank: not found, and too costly for one epoch
    none, msgs = _build(net, x, pad=2, flips=True, mode="auto", epochs=1)
    assert none is None and "50 views" in msgs[0]


def test_the_teacher_says_once_and_computes_inline(tmp_path, monkeypatch):
    monkeypatch.setenv("FITNETS_CACHE", str(tmp_path))
    net, x = _net(), torch.rand(10, 3, 8, 8)
    msgs: list[str] = []
    cfg = make_config(None, ["data.augment_pad=1", "data.augment_flip=true"])
    teacher = Teacher(net, cfg, FP32, x, 4, say=msgs.append)
    assert "auto (a bank of all 18 views when one is on disk" in teacher.describe_cache()
    for _ in range(2):
        teacher.prepare([LOGITS], epochs=3)
    assert len(msgs) == 1 and "computed inline" in msgs[0]
    b = _batches(x, 1, True)[0]
    with torch.no_grad():
        assert torch.equal(teacher.logits(b), net(b.x))  # the teacher ran on the batch
    cfg = make_config(None, ["data.augment_pad=1", "data.augment_flip=true",
                             "perf.teacher_cache=memory"])
    teacher = Teacher(net, cfg, FP32, x, 4, say=msgs.append)
    teacher.prepare([LOGITS], epochs=1)  # memory insists, whatever the cost
    assert "computing it once: 180 teacher forwards" in msgs[-1]
    with torch.no_grad():
        torch.testing.assert_close(teacher.logits(b), net(b.x), rtol=1e-5, atol=1e-6)


def test_a_bank_that_does_not_fit_is_computed_inline(tmp_path, monkeypatch):
    monkeypatch.setenv("FITNETS_CACHE", str(tmp_path))
    monkeypatch.setattr(teacher_cache, "available_bytes", lambda path, device: 1000)
    net, x = _net(), torch.rand(10, 3, 8, 8)
    for mode in ("memory", "disk"):
        cache, msgs = _build(net, x, pad=1, flips=True, mode=mode)
        assert cache is None and "does not fit" in msgs[0] and "computing it inline" in msgs[0]
    assert not list(tmp_path.rglob("*.part"))


# --------------------------------------------------------------------------- disk


class Killed(RuntimeError):
    pass


def test_a_killed_build_resumes_and_ends_as_an_uninterrupted_one(tmp_path, monkeypatch):
    monkeypatch.setenv("FITNETS_CACHE", str(tmp_path))
    net, x = _net(), torch.rand(24, 3, 8, 8)
    whole, _ = _build(net, x, pad=1, flips=True)  # in memory, uninterrupted
    calls = [0]

    def dies(v):  # the teacher, killed after 20 batches (4 images each: 16-row chunks)
        calls[0] += 1
        if calls[0] > 20:
            raise Killed
        return net(v)

    with pytest.raises(Killed):
        _build(net, x, pad=1, flips=True, mode="disk", fn=dies)
    part, progress = partial(next(tmp_path.rglob("*.part")).with_suffix(".bin"))
    done = json.loads(progress.read_text())["done"]
    assert 0 < done < 18 * 24 and not part.with_suffix(".bin").exists()
    calls[0] = 0

    def counted(v):
        calls[0] += 1
        return net(v)

    cache, msgs = _build(net, x, pad=1, flips=True, mode="disk", fn=counted)
    assert "computing it once" in msgs[0] and "resuming" in msgs[1]
    assert f"at row {done:,} of 432" in msgs[1]
    assert calls[0] == 1 + -(-(18 * 24 - done) // 4)  # the probe, then only the rest
    assert torch.equal(cache.store, whole.store)  # the same numbers, bit for bit
    assert not part.exists() and not progress.exists() and cache.path.exists()
    meta = json.loads(sidecar(cache.path).read_text())
    assert meta["shape"] == [432, 10] and meta["dtype"] == "float32" and meta["pad"] == 1
    assert meta["key"] == cache.path.stem and len(meta["sha256"]) == 64


def test_a_corrupt_bank_fails_its_checksum_and_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("FITNETS_CACHE", str(tmp_path))
    net, x = _net(), torch.rand(10, 3, 8, 8)
    first, _ = _build(net, x, pad=1, flips=False, mode="disk")
    good = first.store.clone()
    del first
    raw = bytearray(next(tmp_path.rglob("*.bin")).read_bytes())
    raw[100] ^= 0xFF
    path = next(tmp_path.rglob("*.bin"))
    path.write_bytes(bytes(raw))
    again, msgs = _build(net, x, pad=1, flips=False, mode="disk")
    assert "checksum mismatch" in msgs[0] and "rebuilding" in msgs[0]
    assert "computing it once" in msgs[1] and torch.equal(again.store, good)
    _, msgs = _build(net, x, pad=1, flips=False, mode="disk")
    assert "reusing" in msgs[0]
    # a sidecar that describes another bank is not trusted either
    side = sidecar(path)
    side.write_text(side.read_text().replace('"pad": 1', '"pad": 3'))
    _, msgs = _build(net, x, pad=1, flips=False, mode="disk")
    assert "does not describe this bank" in msgs[0]


# --------------------------------------------------------------------------- end to end

BASE = ["device=cpu", "data.name=mnist", "data.download=false", "data.val_size=20",
        "data.train_limit=80", "data.batch_size=20", "train.optim.name=sgd",
        "train.optim.lr=0.01", "perf.precision=fp32", "perf.channels_last=false",
        "data.augment_pad=1", "data.augment_flip=true"]


@pytest.mark.slow
def test_distill_runs_share_a_disk_bank_and_equal_the_inline_run(tiny_mnist, tmp_path,
                                                                  monkeypatch, capsys):
    monkeypatch.setenv("FITNETS_CACHE", str(tmp_path / "cache"))
    teacher = tmp_path / "teacher"
    # a teacher whose outputs tell views apart (after 1 SGD epoch they are near uniform,
    # and a bank read in the wrong views trains the same student: measured)
    run(make_config(None, [*BASE, f"data.root={tiny_mnist}", "model.name=mnist_teacher",
                           "train.epochs=2", "data.augment_pad=0", "data.train_limit=240",
                           "train.optim.name=adam", "train.optim.lr=0.002"]),
        "train", teacher, verbose=False)
    args = [*BASE, f"data.root={tiny_mnist}", "method=kd", f"teacher.weights={teacher}",
            "train.epochs=2", "train.optim.lr=0.05"]
    results, logs = {}, {}
    for name, mode in (("inline", "off"), ("build", "disk"), ("reuse", "auto")):
        capsys.readouterr()
        results[name] = run(make_config(None, [*args, f"perf.teacher_cache={mode}"]),
                            "distill", tmp_path / name, verbose=True)
        logs[name] = capsys.readouterr().out
    assert "teacher cache: 18 view(s) (2 flip(s) x 9 shifts) x 80 images" in logs["build"]
    assert "computing it once: 1,440 teacher forwards" in logs["build"]
    assert "teacher cache: reusing logits outputs (18 view(s)" in logs["reuse"]
    assert "teacher cache:" not in logs["inline"]
    assert len(list((tmp_path / "cache" / "teacher").glob("*.bin"))) == 1
    # reading the bank equals computing the teacher inline, up to fp32 rounding of the
    # batches the teacher's kernels saw (exact here; the bank read with each image's flip
    # wrong moves weights by 3e-4 and the loss in its 6th digit: measured)
    weights = {n: load_weights(tmp_path / n / "model.pt")["state_dict"] for n in results}
    losses = {n: [json.loads(r)["train_loss"]
                  for r in (tmp_path / n / "metrics.jsonl").read_text().splitlines()]
              for n in results}
    for name in ("build", "reuse"):
        for k, w in weights["inline"].items():
            torch.testing.assert_close(weights[name][k], w, rtol=1e-5, atol=1e-6)
        assert losses[name] == pytest.approx(losses["inline"], rel=1e-7)
        assert results[name]["test_acc"] == pytest.approx(results["inline"]["test_acc"],
                                                          abs=0.02)


@pytest.mark.slow
def test_the_benchmark_measures_build_bank_inline_and_backprop(tmp_path):
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "teacher_bank.py"
    spec = importlib.util.spec_from_file_location("bench_teacher_bank", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    try:
        out = bench.main(["--images", "24", "--pad", "1", "--batch", "8", "--repeats", "1",
                          "--device", "cpu", "--out", str(tmp_path)])
    finally:
        sys.modules.pop("speed", None)
    assert out["views"] == 18 and out["build_img_s"] > 0
    assert out["bank_bytes"] in (18 * 24 * 20, 18 * 24 * 40)  # bf16 or fp32 logits
    assert set(out["epoch_img_s"]) == {"bank", "inline", "backprop"}
    assert out["runs_by_forwards"] == pytest.approx(1.8)  # 18 views, 10-epoch runs
    saved = json.loads((tmp_path / "teacher-bank-cifar_fast_teacher-cpu.json").read_text())
    assert saved["bank/backprop"] == pytest.approx(out["bank/backprop"])
