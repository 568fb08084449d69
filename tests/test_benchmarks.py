"""The reproduction drivers in benchmarks/, on tiny data (seconds)."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

# integration: matplotlib, PyYAML (.ci/run's locked run checks these under its pins)
pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_reproduce_mnist_on_tiny_idx(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from conftest import write_tiny_mnist

    root = write_tiny_mnist(tmp_path / "data", n_train=80, n_test=20)
    driver = load("reproduce_mnist")
    argv = ["--out", str(tmp_path / "t4"), "--seeds", "0", "--epochs-teacher", "1",
            "--epochs-student", "1", "--hint-epochs", "1", "--device", "cpu", "--quiet",
            "--set", f"data.root={root}", "data.download=false", "data.val_size=20",
            "data.batch_size=40"]
    text = driver.main(argv).read_text()
    for name in ("teacher", "backprop-s0", "kd-s0", "fitnet-s0"):
        assert (tmp_path / "t4" / name / "summary.json").is_file(), name
    assert "## Table 4" in text and "| Student, hints + KD (FitNet) |" in text
    assert "| 0.51% | ~30K |" in text and "| 0.55% | ~361K |" in text
    assert "Hardware:" in text and "torch " in text and "Command: `python" in text
    assert "Wall-clock time" in text and "test error (best-val epoch)" in text
    # a killed run (summary gone) is resumed, the finished ones are skipped
    (tmp_path / "t4" / "backprop-s0" / "summary.json").unlink()
    capsys.readouterr()
    driver.main([*argv[:-5], "--resume", *argv[-5:]])
    said = capsys.readouterr().out
    assert "skip" in said and f"resume {tmp_path / 't4' / 'backprop-s0'}" in said
    assert (tmp_path / "t4" / "backprop-s0" / "summary.json").is_file()
    sys.modules.pop("common", None)


def write_tiny_cifar(root: Path, per_batch: int, n_test: int) -> None:
    """The canonical CIFAR-10 pickles under ``root`` (random images, ``per_batch`` per batch)."""
    import numpy as np

    from conftest import cifar10_members

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name, data in cifar10_members(np.random.default_rng(0), per_batch=per_batch,
                                      n_test=n_test).items():
        (folder / name).write_bytes(data)


@pytest.mark.slow
def test_depth_study_on_tiny_cifar_with_two_budgets(tmp_path):
    pytest.importorskip("matplotlib")
    import yaml

    write_tiny_cifar(tmp_path / "data", per_batch=12, n_test=10)
    driver = load("depth_study")
    argv = ["--out", str(tmp_path / "d"), "--depths", "3", "--budgets", "30000", "107000",
            "--epochs-teacher", "1", "--epochs-student", "1", "--hint-epochs", "1",
            "--device", "cpu", "--quiet", "--set", f"data.root={tmp_path / 'data'}",
            "data.download=false", "data.val_size=10", "data.batch_size=25"]
    text = driver.main(argv).read_text()
    for name in ("d3-backprop-s0", "d3-kd-s0", "d3-fitnet-s0", "107k-d3-backprop-s0",
                 "107k-d3-kd-s0", "107k-d3-fitnet-s0"):
        assert (tmp_path / "d" / name / "summary.json").is_file(), name
    assert "students of ~30K parameters" in text and "students of ~107K parameters" in text
    assert (tmp_path / "d" / "depth.png").stat().st_size > 0
    # the 107K students really are ~107K: the report's parameter column
    assert "thin_cifar_d3_107k | 107,246 |" in text
    # the BatchNorm ablation: the same students without BN, from the same teacher
    argv = ["--out", str(tmp_path / "nobn"), "--teacher-run", str(tmp_path / "d" / "teacher"),
            "--depths", "3", "--no-batchnorm", *argv[argv.index("--epochs-teacher"):]]
    text = driver.main(argv).read_text()
    for method in ("backprop", "kd", "fitnet"):
        config = (tmp_path / "nobn" / f"nobn-d3-{method}-s0" / "config.yaml").read_text()
        assert "thin:thin_cifar_d3_nobn" in config, method
    assert "students of ~30K parameters without BatchNorm" in text
    assert "thin_cifar_d3_nobn | 30,410 |" in text  # its parameter count
    # the control for the hint stage's extra epochs: KD for 1 + 1 epochs, beside the three
    head, tail = argv[:argv.index("--epochs-teacher")], argv[argv.index("--epochs-teacher"):]
    driver.main([*head, "--methods", "kd-long", *tail])
    cfg = yaml.safe_load((tmp_path / "nobn" / "nobn-d3-kd-long-s0" / "config.yaml").read_text())
    assert (cfg["method"], cfg["train"]["epochs"]) == ("kd", 2)
    assert cfg["student"]["name"].endswith("thin_cifar_d3_nobn")
    summary = json.loads((tmp_path / "nobn" / "nobn-d3-kd-long-s0" / "summary.json").read_text())
    assert summary["epochs"] == {"kd": 2}
    text = driver.main([*head, "--methods", "backprop", "kd", "fitnet", "kd-long", *tail,
                        "--report-only"]).read_text()
    assert "| depth | backprop | kd | fitnet | kd-long |" in text
    # a column for the control in the per-seed table too (these 1-epoch runs on 36 images
    # may stall at chance: a stalled run is named so, never given a figure)
    row = re.search(r"^\| ~30K \| 3 \| 0 \|(.*)\|$", text, re.M).group(1).split("|")
    assert len(row) == 5 and all(re.fullmatch(r" ([\d.]+|stalled) ", c) for c in row[:4])
    sys.modules.pop("common", None)


@pytest.mark.slow
def test_full_scale_driver_runs_the_control_for_the_hint_epochs(tmp_path, monkeypatch, capsys):
    """cifar10_fullscale.py --methods fitnet kd-long: the control is KD for --epochs +
    --hint-epochs epochs with the same lambda schedule, reported beside hints + KD and
    counted against it seed by seed. With --logits-bank the control builds one disk bank of
    the teacher's logits first and hints + KD's KD stage reads it."""
    import shutil

    import yaml

    write_tiny_cifar(tmp_path / "data", per_batch=12, n_test=10)
    monkeypatch.setenv("FITNETS_CACHE", str(tmp_path / "cache"))
    driver = load("cifar10_fullscale")
    argv = ["--out", str(tmp_path / "f"), "--results", str(tmp_path / "res"), "--methods",
            "fitnet", "kd-long", "--seeds", "0", "--epochs", "1", "--hint-epochs", "1",
            "--logits-bank", "--device", "cpu", "--set", f"data.root={tmp_path / 'data'}",
            "data.download=false", "data.val_size=10", "data.batch_size=25", "train.epochs=1"]
    text = driver.main(argv).read_text()
    cfg = yaml.safe_load((tmp_path / "f" / "fitnet1-kd-long-s0" / "config.yaml").read_text())
    assert (cfg["method"], cfg["train"]["epochs"], cfg["kd"]["lambda_saturate"]) == ("kd", 2, 1)
    # the bank: built by the control (run first, though the tables put hints + KD first),
    # read by hints + KD's KD stage; its hint stage ran the teacher inline
    out = capsys.readouterr().out
    built, reused = out.index("run " + str(tmp_path / "f" / "fitnet1-kd-long-s0")), \
        out.index("teacher cache: reusing logits outputs (50 view(s)")
    assert built < out.index("run " + str(tmp_path / "f" / "fitnet1-fitnet-s0")) < reused
    assert "teacher cache: block2 computed inline" in out
    fitnet_cfg = yaml.safe_load((tmp_path / "f" / "fitnet1-fitnet-s0" / "config.yaml")
                                .read_text())
    assert (cfg["perf"]["teacher_cache"], fitnet_cfg["perf"]["teacher_cache"]) == ("disk", "auto")
    banks = [json.loads(p.read_text()) for p in (tmp_path / "cache").rglob("*.json")]
    assert [(b["what"], b["views"]) for b in banks] == [("logits", 50)]
    summary = json.loads((tmp_path / "f" / "fitnet1-kd-long-s0" / "summary.json").read_text())
    assert summary["epochs"] == {"kd": 2}
    fitnet = json.loads((tmp_path / "f" / "fitnet1-fitnet-s0" / "summary.json").read_text())
    assert fitnet["epochs"] == {"hints:0": 1, "kd": 1}
    # the paper's three first, then the control, in the tables whatever the order asked
    assert "| student | seed | hints + KD | KD, + hint epochs | order |" in text
    assert (tmp_path / "res" / "fitnet1-kd-long-s0" / "summary.json").is_file()
    # these 1-epoch runs on 36 random images may stall at chance (then named so, never
    # compared): the count of seeds where hints + KD beat the control, on the same runs given
    # accuracies by hand (seed 0: 30% against 25%, seed 1: 20% against 25%)
    dirs = {}
    for seed, accs in ((0, (0.30, 0.25)), (1, (0.20, 0.25))):
        for m, acc in zip(("fitnet", "kd-long"), accs):
            run = tmp_path / "byhand" / f"fitnet1-{m}-s{seed}"
            shutil.copytree(tmp_path / "f" / f"fitnet1-{m}-s0", run)
            done = json.loads((run / "summary.json").read_text())
            stages = [{**st, "stalled": False} for st in done["stages"]]  # learned
            (run / "summary.json").write_text(json.dumps({**done, "test_acc": acc,
                                                          "stalled": False, "stages": stages}))
            (run / "config.yaml").write_text(yaml.safe_dump({**cfg, "seed": seed}))
            dirs.setdefault(("fitnet1", m), []).append(run)
    text = driver.table(tmp_path / "f" / "teacher", dirs)
    assert "| fitnet1 | 1 | 20.00 | 25.00 | - |" in text
    assert "hints + KD above kd-long in 1 of 2 seed(s)." in text
    sys.modules.pop("common", None)


def test_paper_order_and_the_depth_studys_paired_counts():
    """The per-seed order column (accuracies: higher is better; perplexities: lower) and the
    depth study's paired counts, on figures worked out by hand."""
    driver = load("depth_study")  # puts benchmarks/ on sys.path, for common
    import common

    up = {"backprop": 0.70, "kd": 0.75, "fitnet": 0.80}
    assert common.paper_order(up) == "hints + KD > KD > back-propagation"
    assert common.paper_order(up, lower_is_better=True) == "not the paper's order"
    assert (common.paper_order({"backprop": 3.0, "kd": 2.5, "fitnet": 2.0},
                               lower_is_better=True) == "hints + KD < KD < back-propagation")
    assert common.paper_order({**up, "kd": 0.81}) == "not the paper's order"
    assert common.paper_order({"backprop": 0.7, "fitnet": 0.8}) == "-"  # KD not finished
    text = driver.seed_table({
        (30000, 3, 0): up,
        (30000, 3, 1): {"backprop": 0.72, "kd": 0.74, "fitnet": 0.73},  # hints + KD < KD
        (107000, 9, 0): {"backprop": 0.60, "kd": 0.65},  # its FitNet not finished
        (107000, 9, 1): {"backprop": 0.61, "kd": 0.66, "fitnet": None},  # FitNet stalled
    })
    rows = re.findall(r"^\| ~\d+K \|.*$", text, re.M)
    assert rows == [
        "| ~30K | 3 | 0 | 70.00 | 75.00 | 80.00 | hints + KD > KD > back-propagation |",
        "| ~30K | 3 | 1 | 72.00 | 74.00 | 73.00 | not the paper's order |",
        "| ~107K | 9 | 0 | 60.00 | 65.00 | - | - |",
        "| ~107K | 9 | 1 | 61.00 | 66.00 | stalled | - |"]
    assert ("Over the 2 (budget, depth, seed) with all three: the paper's order in 1 of 2; "
            "hints + KD above KD in 1 of 2, above back-propagation in 2 of 2; KD above "
            "back-propagation in 2 of 2.") in text
    assert "kd-long" not in text  # the control only where it was run
    # with the control (kd-long: KD as many epochs as both FitNet stages): its column, and
    # hints + KD counted against it where both learned
    text = driver.seed_table({
        (30000, 9, 0): {**up, "kd-long": 0.78},  # hints + KD above the control
        (30000, 9, 1): {"backprop": 0.72, "kd": 0.74, "fitnet": 0.75, "kd-long": 0.76},
        (30000, 9, 2): {"backprop": 0.72, "kd": 0.74, "fitnet": 0.75},  # control not run
    }, methods=["backprop", "kd", "fitnet", "kd-long"])
    rows = re.findall(r"^\| ~\d+K \|.*$", text, re.M)
    assert rows == [
        "| ~30K | 9 | 0 | 70.00 | 75.00 | 80.00 | 78.00 | hints + KD > KD > back-propagation |",
        "| ~30K | 9 | 1 | 72.00 | 74.00 | 75.00 | 76.00 | hints + KD > KD > back-propagation |",
        "| ~30K | 9 | 2 | 72.00 | 74.00 | 75.00 | - | hints + KD > KD > back-propagation |"]
    assert ("hints + KD above kd-long in 1 of 2 seed(s); kd-long above KD in 2 of 2.") in text
    sys.modules.pop("common", None)


def test_recorded_full_scale_tables_regenerate_from_their_run_files(tmp_path, monkeypatch):
    """The per-seed tables of the CIFAR-10 full-scale and language-model drivers, rebuilt
    from the run files recorded in benchmarks/results/, are the recorded tables' rows: the
    figures and order column in the README come from those runs."""
    # the text table's speed column counts the corpus's tokens: its runs name it by the
    # relative path the driver makes it at (a git-ignored folder), so make it here
    monkeypatch.chdir(tmp_path)
    res = BENCH / "results"
    fullscale = load("cifar10_fullscale")
    runs = res / "cifar10-fullscale"
    text = fullscale.table(runs / "teacher", {
        ("fitnet1", m): [runs / f"fitnet1-{m}-s{s}" for s in (0, 1, 2)]
        for m in fullscale.METHODS})
    rows = re.findall(r"^\| fitnet1 \| \d \|.*$", text, re.M)
    assert len(rows) == 3 and all(r in (runs / "README.md").read_text() for r in rows)
    assert rows[0] == "| fitnet1 | 0 | 76.95 | 77.79 | 82.13 | hints + KD > KD > back-propagation |"
    # the control for the hint epochs, from the fp32 teacher: KD (10), hints + KD, KD (13)
    runs = res / "cifar10-fullscale-control"
    text = fullscale.table(runs / "teacher", {
        ("fitnet1", m): [runs / f"fitnet1-{m}-s{s}" for s in (0, 1)]
        for m in ("kd", "fitnet", "kd-long")})
    rows = re.findall(r"^\| fitnet1 \| \d \|.*$", text, re.M)
    assert len(rows) == 2 and all(r in (runs / "README.md").read_text() for r in rows)
    assert rows[0].startswith("| fitnet1 | 0 | ") and "| 82.54 | 79.68 |" in rows[0]
    assert rows[1] == "| fitnet1 | 1 | 78.17 | 82.07 | 79.70 | - |"
    count = re.search(r"hints \+ KD above kd-long in .*\.$", text, re.M).group(0)
    assert count in (runs / "README.md").read_text()
    assert count.startswith("hints + KD above kd-long in 2 of 2 seed(s)")
    lm = load("lm_stdlib")
    lm.stdlib_corpus(Path("corpora/stdlib"), lm.CORPUS_BYTES)
    runs = res / "text-stdlib"
    text = lm.table({"teacher": [runs / "teacher"],
                     **{m: [runs / f"{m}-s{s}" for s in (0, 1, 2)] for m in lm.METHODS}})
    rows = re.findall(r"^\| \d \| [\d.]+ \|.*$", text, re.M)
    assert len(rows) == 3 and all(r in (runs / "README.md").read_text() for r in rows)
    # perplexity: lower is better; KD above back-propagation in every seed, so not the order
    assert rows[0] == "| 0 | 13.035 | 16.211 | 6.237 | not the paper's order |"
    sys.modules.pop("common", None)


@pytest.mark.slow
def test_depth_study_passes_a_maxout_teachers_pool_rounding_to_every_run(tmp_path,
                                                                         monkeypatch):
    """--teacher-pool-rounding ceil reaches the teacher's run and every student's teacher:
    were it missing on the student side, the ceil teacher's fc1 (192x5x5 inputs) would not
    load into a floor-built teacher (192x4x4) and the student runs would fail."""
    pytest.importorskip("matplotlib")
    import yaml

    write_tiny_cifar(tmp_path / "data", per_batch=6, n_test=6)
    driver = load("depth_study")
    argv = ["--out", str(tmp_path / "d"), "--depths", "3", "--teacher", "cifar_teacher",
            "--teacher-pool-rounding", "ceil", "--epochs-teacher", "1", "--epochs-student",
            "1", "--hint-epochs", "1", "--device", "cpu", "--quiet", "--set",
            f"data.root={tmp_path / 'data'}", "data.download=false", "data.val_size=6",
            "data.batch_size=12", "data.augment_pad=0", "data.augment_flip=false"]  # one
    # view to bank: the maxout teacher's forwards of every view were most of this test's 37 s
    # in CI with 162 views, 7 of its 28 s with 18 (the bank's views are teacher_bank's tests)
    driver.main(argv)
    teacher = yaml.safe_load((tmp_path / "d" / "teacher" / "config.yaml").read_text())
    assert teacher["model"]["pool_rounding"] == "ceil"
    for method in ("backprop", "kd", "fitnet"):
        run = tmp_path / "d" / f"d3-{method}-s0"
        assert (run / "summary.json").is_file(), method
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        assert cfg["teacher"]["pool_rounding"] == "ceil", method
    # --report-only: the figures of the runs finished so far, nothing run; the rest listed
    (tmp_path / "d" / "report.md").unlink()
    driver.main([*argv[:2], "--depths", "3", "5", "--seeds", "0", "1", "--report-only",
                 *argv[argv.index("--teacher"):]])
    text = (tmp_path / "d" / "report.md").read_text()
    runs = re.findall(r"^\| (d\d-\w+-s\d) \|", text, re.M)  # the runs table's rows
    assert runs == ["d3-backprop-s0", "d3-kd-s0", "d3-fitnet-s0"]  # the finished ones
    assert "| 5 | - | - | - |" in text
    # the per-seed table names every finished run, a stalled one as such, never as a figure
    row = re.search(r"^\| ~30K \| 3 \| 0 \| (.*) \| (.*) \| (.*) \| (.*) \|$", text, re.M)
    assert row and all(re.fullmatch(r"[\d.]+|stalled", c) for c in row.groups()[:3])
    assert "Report only: 9 run(s) of this command not finished yet" in text
    assert "d5-fitnet-s1" in text and "d3-kd-s1" in text
    assert not (tmp_path / "d" / "d5-kd-s0").exists()  # nothing ran
    # --teacher-run: that finished teacher, its network and pooling read from its config
    # (the default --teacher, resnet20, would not load its weights), none trained;
    # --logits-bank: the KD run banks the teacher's logits on disk, the FitNet run stays auto
    monkeypatch.setenv("FITNETS_CACHE", str(tmp_path / "cache"))
    again = ["--out", str(tmp_path / "e"), "--depths", "3", "--teacher-run",
             str(tmp_path / "d" / "teacher"), "--logits-bank",
             *argv[argv.index("--epochs-student"):]]
    driver.main(again)
    assert not (tmp_path / "e" / "teacher").exists()
    for method, cache in (("kd", "disk"), ("fitnet", "auto")):
        cfg = yaml.safe_load((tmp_path / "e" / f"d3-{method}-s0" / "config.yaml").read_text())
        assert cfg["teacher"]["name"] == "cifar_teacher", method
        assert cfg["teacher"]["pool_rounding"] == "ceil", method
        assert cfg["teacher"]["weights"] == str(tmp_path / "d" / "teacher"), method
        assert cfg["perf"]["teacher_cache"] == cache, method
    # one view: no flips, no shifts
    banks = [json.loads(p.read_text()) for p in (tmp_path / "cache").rglob("*.json")]
    assert [b["what"] for b in banks] == ["logits"] and banks[0]["views"] == 1
    with pytest.raises(SystemExit, match="not a finished run"):
        driver.main([*again[:4], "--teacher-run", str(tmp_path / "nothing"), *again[6:]])
    sys.modules.pop("common", None)


@pytest.mark.slow
def test_soft_targets_of_a_trained_teacher(tmp_path):
    import json
    import math

    from conftest import write_tiny_mnist
    from fitnets import FitnetsError

    root = write_tiny_mnist(tmp_path / "data", n_train=80, n_test=20)
    from fitnets.api import train

    run = tmp_path / "teacher"
    train("recipes/mnist-teacher.yaml", verbose=False, overrides=[
        f"data.root={root}", "data.download=false", "data.val_size=20", "data.batch_size=40",
        "train.epochs=2", "train.patience=0", "device=cpu", "perf.precision=fp32",
        f"out={run}"])
    driver = load("soft_targets")
    summary = json.loads((run / "summary.json").read_text())
    cold = driver.stats(run, 1.0, "test")
    hot = driver.stats(run, 1e6, "test")
    assert cold["n"] == hot["n"] == 20
    # accuracy is the argmax, whatever tau: the run's own test accuracy
    assert cold["acc"] == hot["acc"] == pytest.approx(summary["test_acc"])
    # tau -> infinity: the uniform distribution over the 10 classes
    assert hot["top_mean"] == pytest.approx(0.1, abs=1e-4)
    assert hot["entropy"] == pytest.approx(math.log(10), abs=1e-4)
    assert hot["non_label"] == pytest.approx(0.9, abs=1e-4)
    # a colder softmax is peakier; every statistic stays in its range
    assert cold["top_mean"] >= hot["top_mean"] and cold["entropy"] <= hot["entropy"]
    assert 0.1 <= cold["top_median"] <= 1 and 0 <= cold["non_label"] <= 0.9
    text = driver.main([str(run), "--split", "val", "--out", str(tmp_path / "t.md")])
    assert f"| {run} | 20 |" in text and (tmp_path / "t.md").read_text() == text
    (run / "summary.json").unlink()
    with pytest.raises(FitnetsError, match="not a finished run"):
        driver.stats(run, 3.0, "train")
    sys.modules.pop("common", None)


@pytest.mark.slow
def test_reproduce_cifar10_lists_runs_at_chance_as_failures(tmp_path):
    """Random pictures cannot be learned: every run stalls at chance, and Table 1 lists
    them as failures beside the paper's numbers instead of averaging them."""
    pytest.importorskip("matplotlib")
    write_tiny_cifar(tmp_path / "data", per_batch=6, n_test=6)
    driver = load("reproduce_cifar10")
    argv = ["--out", str(tmp_path / "t1"), "--students", "fitnet4", "kd4", "backprop4",
            "--epochs-teacher", "1", "--epochs-student", "1", "--hint-epochs", "1",
            "--device", "cpu", "--quiet", "--set", f"data.root={tmp_path / 'data'}",
            "data.download=false", "data.val_size=6", "data.batch_size=12",
            "data.preprocess=standardize"]
    text = driver.main(argv).read_text()
    for name in ("teacher", "fitnet4-s0", "kd4-s0", "backprop4-s0"):
        assert (tmp_path / "t1" / name / "summary.json").is_file(), name
    assert "## Table 1" in text and "| 91.61% | ~2.5M |" in text and "| 90.18% | ~9M |" in text
    row = next(x for x in text.splitlines() if x.startswith("| FitNet 4 architecture, KD"))
    assert "- (none learned) STALLED at chance, not averaged: seed 0" in row
    kd = __import__("yaml").safe_load((tmp_path / "t1" / "kd4-s0" / "config.yaml").read_text())
    assert kd["method"] == "kd" and kd["student"]["name"] == "fitnet4"
    sys.modules.pop("common", None)


def test_fast_teacher_speed_probe_counts_flops_and_times_both_steps(tmp_path):
    import json

    out = load("fast_teacher").main(["--device", "cpu", "--batch", "4", "--steps", "1",
                                     "--repeats", "1", "--out", str(tmp_path)])
    # airbench94's network: about 0.24 GFLOP an image forward, three times that a step
    assert out["gflop_per_image_forward"] == pytest.approx(0.236, abs=0.01)
    assert out["gflop_per_image_step"] == pytest.approx(3 * out["gflop_per_image_forward"],
                                                        rel=0.05)
    assert out["bare_img_s"] > 0 and out["loop_img_s"] > 0 and out["matmul_gflops"] > 0
    assert json.loads((tmp_path / "fast-teacher-cpu.json").read_text()) == out


def test_lm_speed_times_the_loop_and_the_floor_per_stage(tmp_path):
    import json

    # the recipes' models shrunk (the same pair, blocks.3 -> blocks.1) and 4-block batches:
    # the structure of the report, not its figures
    small = ["data.batch_size=4", "teacher.width=32", "teacher.depth=2", "student.width=16",
             "student.depth=4", "perf.precision=fp32"]
    try:
        out = load("lm_speed").main(["--device", "cpu", "--blocks", "6", "--repeats", "1",
                                     "--matmul", "256", "--out", str(tmp_path), "--set",
                                     *small])
    finally:
        sys.modules.pop("speed", None)
        sys.modules.pop("fast_teacher", None)
    assert set(out["steps"]) == {"stage1", "stage2", "backprop"}
    for v in out["steps"].values():
        assert v["fitnets"] > 0 and v["floor"] > 0 and v["fitnets/floor"] > 0
        assert len(v["epoch_s"]["fitnets"]) == len(v["epoch_s"]["floor"]) == 1
    assert out["tokens"] == 6 * 128 and out["matmul_gflops"] > 0
    c = out["teacher_cache"]
    assert c["inline"] > 0 and c["bank"] > 0 and c["build_s"] > 0
    (saved,) = tmp_path.glob("lm-speed-cpu*.json")
    assert json.loads(saved.read_text())["steps"].keys() == out["steps"].keys()
    text = (tmp_path / "lm-speed.md").read_text()
    assert "| stage2 |" in text and "Matmul rate (float32" in text and "torch " in text
