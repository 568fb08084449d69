"""fitnets report: tables, seed statistics and plots from run directories' files only."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest

from fitnets.cli import main
from fitnets.config import dump_yaml, make_config
from fitnets.errors import FitnetsError
from fitnets.report import load_run, report
from fitnets.report import test_error_at as error_at

# integration: matplotlib (.ci/run's locked run checks these under its pins)
pytestmark = pytest.mark.integration

pytest.importorskip("matplotlib")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fake_run(path: Path, records: list[dict], summary: dict | None, *overrides: str) -> Path:
    """A run directory as `fitnets distill` leaves it, written by hand."""
    path.mkdir(parents=True)
    cfg = make_config(None, ["data.name=mnist", "method=backprop", f"out={path}", *overrides])
    (path / "config.yaml").write_text(dump_yaml(cfg))
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if summary is not None:
        (path / "summary.json").write_text(json.dumps(summary))
    return path


def classifier_records(stage: str, val_errors: list[float], test_accs: list[float],
                       lam: bool = False) -> list[dict]:
    out = []
    for i, (ve, ta) in enumerate(zip(val_errors, test_accs), 1):
        r = {"stage": stage, "epoch": i, "lr": 0.001, "train_loss": 1.0 / i,
             "val_loss": 0.5 / i, "val_acc": 1 - ve, "val_error": ve, "test_acc": ta,
             "time": 2.0}
        if lam:
            r.update(train_ce=0.4 / i, train_soft=0.6 / i, **{"lambda": 4.0 - i})
        out.append(r)
    return out


def summary_for(method: str, seed: int, epochs: dict, test_error: float) -> dict:
    return {"command": "distill", "method": method, "dataset": "mnist",
            "model": "mnist_student", "teacher": None, "params": 30_000,
            "test_acc": 1 - test_error, "test_error": test_error, "val_acc": 0.9,
            "stages": [], "epochs": epochs, "wall_time_s": 12.5, "seed": seed}


# Three seeds of one backprop config: the test errors at the last epoch and at the
# best-validation epoch (epoch 2: lowest val_error) differ, so both statistics are checked.
SEEDS = {0: ([0.10, 0.05, 0.08], [0.80, 0.90, 0.85]),
         1: ([0.12, 0.04, 0.07], [0.78, 0.92, 0.88]),
         2: ([0.11, 0.06, 0.09], [0.79, 0.91, 0.83])}


@pytest.fixture
def runs(tmp_path: Path) -> list[Path]:
    dirs = []
    for seed, (ve, ta) in SEEDS.items():
        dirs.append(fake_run(tmp_path / f"bp-s{seed}", classifier_records("backprop", ve, ta),
                             summary_for("backprop", seed, {"backprop": 3}, 1 - ta[-1]),
                             f"seed={seed}"))
    hints = [{"stage": "hints", "pair": 0, "epoch": i, "lr": 0.001, "train_loss": 5.0 / i,
              "val_hint_loss": 4.0 / i, "time": 1.0} for i in (1, 2)]
    fit = hints + classifier_records("kd", [0.2, 0.1], [0.7, 0.8], lam=True)
    dirs.append(fake_run(tmp_path / "fitnet", fit,
                         summary_for("fitnet", 0, {"hints:0": 2, "kd": 2}, 0.2),
                         "method=fitnet"))
    # killed inside KD: no summary, and the last line was cut short by the kill
    killed = fake_run(tmp_path / "killed", hints + classifier_records("kd", [0.3], [0.6], True),
                      None, "method=fitnet", "seed=7")
    with open(killed / "metrics.jsonl", "a") as f:
        f.write('{"stage": "kd", "epo')
    dirs.append(killed)
    return dirs


def table_row(text: str, name: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"| {name} |"))


def test_report_tables_plots_and_killed_run(runs, tmp_path):
    path = report(runs, tmp_path / "rep", title="Test report")
    text = path.read_text()
    assert text.startswith("# Test report")
    assert "test error (last epoch)" in text and "test error (best-val epoch)" in text
    row = table_row(text, "bp-s0")
    assert "| 15.00% (ep 3) | 10.00% (ep 2) |" in row  # last epoch vs best-validation epoch
    assert "backprop 3" in row and "finished" in row and "12.5s" in row
    assert "| mnist_student | 30,000 |" in row
    killed = table_row(text, "killed")
    assert "killed at stage kd epoch 1" in killed and "hints:0 2, kd 1" in killed
    assert "40.00% (ep 1)" in killed
    assert "4.0s" in killed  # a killed run's time: the sum of its logged epochs
    for name in ("bp-s0", "bp-s1", "bp-s2", "fitnet", "killed"):
        png = tmp_path / "rep" / f"curves-{name}.png"
        data = png.read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 5000, name
        assert f"]({png.name})" in text


def test_seed_group_mean_and_std_by_hand(runs, tmp_path):
    text = report(runs, tmp_path / "rep").read_text()
    last = [1 - ta[-1] for _, ta in SEEDS.values()]  # 0.15, 0.12, 0.17
    best = [1 - ta[1] for _, ta in SEEDS.values()]  # 0.10, 0.08, 0.09
    m_last, s_last = sum(last) / 3, statistics.stdev(last)
    m_best, s_best = sum(best) / 3, statistics.stdev(best)
    assert (round(100 * m_last, 2), round(100 * s_last, 2)) == (14.67, 2.52)
    assert (round(100 * m_best, 2), round(100 * s_best, 2)) == (9.0, 1.0)
    row = table_row(text, "bp-s0, bp-s1, bp-s2")
    assert "| 0, 1, 2 | 3 |" in row
    assert "14.67 ± 2.52% (n=3)" in row and "9.00 ± 1.00% (n=3)" in row
    # the fitnet runs differ only by seed too; the killed one is listed but not averaged
    row = table_row(text, "fitnet, killed")
    assert "| 0 | 1 | 20.00 ± 0.00% (n=1) |" in row


def test_killed_run_status_and_best_epoch(runs):
    killed = load_run(runs[-1])
    assert not killed.finished and killed.status == "killed at stage kd epoch 1"
    assert killed.mults is not None and killed.mults > 0  # counted from the model's name
    assert error_at(load_run(runs[0]))["best_epoch"] == 2


def test_model_that_cannot_be_built_shows_a_dash(tmp_path):
    d = fake_run(tmp_path / "odd", [], None, "student.name=nowhere_module:build")
    text = report([d], tmp_path / "rep").read_text()
    row = table_row(text, "odd")
    assert "| nowhere_module:build | - | - |" in row and "killed before its first epoch" in row


def test_cli_report_and_errors(runs, tmp_path, capsys):
    assert main(["report", *map(str, runs[:2]), "--out", str(tmp_path / "r"),
                 "--title", "CLI"]) == 0
    assert (tmp_path / "r" / "report.md").read_text().startswith("# CLI")
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r2")]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_missing_matplotlib_names_the_extra(monkeypatch, runs, tmp_path):
    import builtins

    real = builtins.__import__

    def no_mpl(name, *a, **k):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_mpl)
    with pytest.raises(FitnetsError, match=r"pip install 'fitnets\[report\]'"):
        report(runs, tmp_path / "rep")


def test_report_on_a_real_tiny_run(tmp_path):
    from conftest import write_tiny_mnist
    from fitnets.run import run

    root = write_tiny_mnist(tmp_path / "data", n_train=120, n_test=40)
    cfg = make_config(None, ["device=cpu", "data.download=false", "data.val_size=40",
                             f"data.root={root}", "data.batch_size=40", "model.name=mnist_student",
                             "train.epochs=2", "train.optim.name=adam"])
    run(cfg, "train", tmp_path / "real", verbose=False)
    text = report([tmp_path / "real"], tmp_path / "rep").read_text()
    row = table_row(text, "real")
    # 4 steps from the paper's tiny initialisation do not leave chance: the guard says so
    assert "| train | mnist | mnist_student |" in row
    assert "| STALLED at chance (train epoch 2) |" in row
    assert "(ep 2)" in row
    assert (tmp_path / "rep" / "curves-real.png").read_bytes()[:8] == PNG_MAGIC


def test_report_on_a_real_joint_run_finds_its_final_stage_and_test_error(tmp_path):
    """A joint run's one stage trains the whole student: the report reads its kind from the
    metrics (it once looked the stage name up in a list that lacked joint)."""
    from conftest import write_tiny_mnist
    from fitnets.run import run

    root = write_tiny_mnist(tmp_path / "data", n_train=120, n_test=40)
    base = ["device=cpu", "data.download=false", "data.val_size=40", f"data.root={root}",
            "data.batch_size=40", "train.optim.name=adam"]
    run(make_config(None, [*base, "model.name=mnist_teacher", "train.epochs=1"]), "train",
        tmp_path / "teacher", verbose=False)
    run(make_config(None, [*base, f"teacher.weights={tmp_path / 'teacher'}", "method=joint",
                           "train.epochs=2"]), "distill", tmp_path / "joint", verbose=False)
    log = (tmp_path / "joint" / "metrics.jsonl").read_text()
    records = [json.loads(x) for x in log.splitlines()]
    assert [(r["stage"], r["kind"]) for r in records] == [("joint", "classifier")] * 2
    joint = load_run(tmp_path / "joint")
    errors = error_at(joint)
    summary = json.loads((tmp_path / "joint" / "summary.json").read_text())
    assert errors["last_epoch"] == 2 and errors["best_epoch"] in (1, 2)
    assert errors["last"] == pytest.approx(1.0 - records[-1]["test_acc"])
    row = table_row(report([tmp_path / "joint"], tmp_path / "rep").read_text(), "joint")
    assert f"{100 * (1 - records[-1]['test_acc']):.2f}" in row
    assert "STALLED at chance (joint epoch 2)" in row  # 2 tiny epochs: still at chance
    assert summary["method"] == "joint" and summary["teacher"] == "mnist_teacher"


# --------------------------------------------------------------------------- language models


def lm_records(val_losses: list[float], test_losses: list[float], stage: str = "train",
               steps: int = 10) -> list[dict]:
    """A language model's classifier epochs as the Trainer logs them (val_ppl and test_ppl
    are exp of the mean token loss)."""
    return [{"stage": stage, "kind": "classifier", "epoch": i, "step": i * steps, "lr": 0.01,
             "train_loss": vl + 0.1, "val_loss": vl, "val_acc": 0.3 + 0.01 * i,
             "val_error": 0.7 - 0.01 * i, "val_ppl": math.exp(vl), "test_acc": 0.3 + 0.02 * i,
             "test_ppl": math.exp(tl), "time": 4.0}
            for i, (vl, tl) in enumerate(zip(val_losses, test_losses), 1)]


def lm_run(path: Path, records: list[dict], summary: dict | None, *overrides: str) -> Path:
    path.mkdir(parents=True)
    cfg = make_config(None, ["data.name=text", "data.path=corpus", "data.block_size=16",
                             "data.batch_size=8", "model.name=gpt", "model.width=16",
                             "model.depth=2", "model.heads=2", f"out={path}", *overrides])
    (path / "config.yaml").write_text(dump_yaml(cfg))
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if summary is not None:
        (path / "summary.json").write_text(json.dumps(summary))
    return path


def lm_summary(records: list[dict], seed: int = 0) -> dict:
    best = min(records, key=lambda r: r["val_loss"])
    return {"command": "train", "method": "train", "dataset": "text", "model": "gpt",
            "params": 10960, "mults": 164096, "test_acc": best["test_acc"],
            "val_acc": best["val_acc"], "epochs": {"train": len(records)},
            "wall_time_s": 12.0, "seed": seed, "stalled": False,
            "test_ppl": best["test_ppl"], "val_ppl": best["val_ppl"],
            "test_loss": math.log(best["test_ppl"]), "unigram_ppl": 22.06}


def test_a_language_model_is_reported_in_perplexity(tmp_path):
    # the best epoch is the lowest validation loss (epoch 2), not the last (3)
    recs = lm_records([2.0, 1.2, 1.3], [2.1, 1.25, 1.35])
    d = lm_run(tmp_path / "lm", recs, lm_summary(recs))
    text = report([d], tmp_path / "rep").read_text()
    assert "## Language models" in text and "test error" not in text
    row = table_row(text, "lm")
    assert f"| {math.exp(1.2):.2f} (ep 2) | {math.exp(1.25):.2f} (ep 2) " \
           f"| {math.exp(1.35):.2f} (ep 3) | 22.06 | 34.00% |" in row
    # 10 steps x 8 blocks x 16 tokens an epoch, 3 epochs of 4 s
    assert f"| {10 * 8 * 16 / 4:,.0f} | train 3 |" in row
    assert "| 10,960 | 10,256 |" in row  # multiplications per token: 164,096 / 16
    png = (tmp_path / "rep" / "curves-lm.png").read_bytes()
    assert png[:8] == PNG_MAGIC


def test_a_killed_language_model_run_is_counted_from_its_config(tmp_path):
    d = lm_run(tmp_path / "cut", lm_records([2.0], [2.1]), None)
    run = load_run(d)
    assert run.language_model and run.status == "killed at stage train epoch 1"
    from fitnets.models import build_model
    from fitnets.models.counting import count_params

    gpt = build_model("gpt", num_classes=257,
                      sizes={"width": 16, "depth": 2, "heads": 2, "context": 16})
    assert run.params == count_params(gpt)
    row = table_row(report([d], tmp_path / "rep").read_text(), "cut")
    assert "| - |" in row  # no summary: no unigram perplexity


def test_language_model_seeds_average_the_test_perplexity(tmp_path):
    dirs = []
    for seed, loss in ((0, 1.0), (1, 1.2), (2, 1.4)):
        recs = lm_records([loss + 0.05], [loss])
        dirs.append(lm_run(tmp_path / f"s{seed}", recs, lm_summary(recs, seed), f"seed={seed}"))
    text = report(dirs, tmp_path / "rep").read_text()
    ppl = [math.exp(v) for v in (1.0, 1.2, 1.4)]
    m, s = sum(ppl) / 3, statistics.stdev(ppl)
    row = table_row(text, "s0, s1, s2")
    assert f"{m:.2f} ± {s:.2f} (n=3)" in row and "32.00% ± 0.00% (n=3)" in row


def test_image_and_language_model_runs_get_a_section_each(runs, tmp_path):
    recs = lm_records([2.0, 1.5], [2.1, 1.6])
    lm = lm_run(tmp_path / "lm", recs, lm_summary(recs))
    text = report([runs[0], lm], tmp_path / "rep").read_text()
    assert "1 image-classifier run(s) and 1 language-model run(s)" in text
    images = text[text.index("## Image classifiers: runs"):text.index("## Language models")]
    assert "| bp-s0 |" in images and "| lm |" not in images
    lms = text[text.index("## Language models"):text.index("## Learning curves")]
    assert "| lm |" in lms and "| bp-s0 |" not in lms
    assert (tmp_path / "rep" / "curves-lm.png").is_file()
    assert (tmp_path / "rep" / "curves-bp-s0.png").is_file()


def test_report_on_a_real_language_model_run(tmp_path):
    from conftest import train_tiny_lm

    out = train_tiny_lm(tmp_path, tmp_path / "real-lm", epochs=2)
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    best = min(records, key=lambda r: r["val_loss"])
    row = table_row(report([out], tmp_path / "rep").read_text(), "real-lm")
    # the table's perplexities are exp of the logged mean token losses
    assert f"| {math.exp(best['val_loss']):.2f} (ep {best['epoch']}) " in row
    assert f"| {math.exp(summary['test_loss']):.2f} (ep {best['epoch']}) " in row
    assert f"| {summary['unigram_ppl']:.2f} | {100 * summary['test_acc']:.2f}% |" in row
    assert (tmp_path / "rep" / "curves-real-lm.png").read_bytes()[:8] == PNG_MAGIC
