"""fitnets search with real trials: a trial that ends stalled, resume after a kill, two
processes on one SQLite study, best.yaml as a recipe, and the report.

Real Optuna studies in real SQLite files, real worker processes, real runs on scikit-learn's
8x8 digits (a digits_teacher trained once per module).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

optuna = pytest.importorskip("optuna")
pytest.importorskip("sklearn")
# one xdist worker for them all (one teacher), under --dist loadgroup. Note: with pytest 9.2
# and xdist 3.8 loadgroup groups nothing (xdist renames item._nodeid, which pytest 9 no
# longer reads: the ids live in item._id), so each worker trains the teacher once (the
# fixture is session-scoped: not once a module switch).
# integration: optuna, PyYAML (.ci/run's locked run checks these under its pins); slow: real
# trials, 10-30 s a test (the locked run checks Optuna's API through test_study.py)
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.xdist_group("search-trials")]

from conftest import fitnets_cli, fitnets_env  # noqa: E402
from fitnets.cli import main  # noqa: E402
from fitnets.config import make_config  # noqa: E402
from fitnets.search import load_spec  # noqa: E402

BUDGET = ["--budget", "train.epochs=3", "hints.stage.epochs=1"]


def cli(args: list[str], **kw) -> subprocess.CompletedProcess:
    return fitnets_cli(args, quiet=False, **kw)


@pytest.fixture(scope="session")
def recipe(tmp_path_factory, digits) -> Path:
    """The digits recipe with a trained teacher's weights (session-scoped: kept when an xdist
    worker runs another module's test between these, where a module fixture would be
    built again)."""
    root = tmp_path_factory.mktemp("search")
    path = root / "digits-fitnet.yaml"
    path.write_text(yaml.safe_dump(digits))
    r = cli(["train", str(path), "--out", str(root / "teacher"), "train.epochs=5", "--quiet"])
    assert r.returncode == 0, r.stderr
    summary = json.loads((root / "teacher" / "summary.json").read_text())
    assert summary["test_acc"] > 0.9  # a teacher worth distilling
    recipe = dict(digits, teacher={"name": "digits_teacher", "weights": str(root / "teacher")})
    path.write_text(yaml.safe_dump(recipe))
    return path


def study_of(search_dir: Path):
    spec = load_spec(search_dir)
    return optuna.load_study(study_name=spec.study, storage=spec.storage)


# --------------------------------------------------------------------------- trials


def test_a_trial_that_ends_stalled_counts_as_stalled_and_no_completed_trial_exits_3(
        recipe, tmp_path):
    """lr 1e-8 and a constant lambda: the KD loss never moves. The stall guard's verdict on a
    short stage is given at its end, so the trial runs its 3 epochs and then counts as
    stalled (pruned); with no trial complete there is no best.yaml and the exit code is 3."""
    out = tmp_path / "s"
    r = cli(["search", str(recipe), "method=kd", "kd.lambda_start=10", "kd.lambda_saturate=20",
             "--out", str(out), "--trials", "1", "--space", "train.optim.lr=1e-8",
             "--budget", "train.epochs=3"])
    assert r.returncode == 3, r.stderr
    assert "no trial of the search completed" in r.stderr
    (t,) = study_of(out).trials
    assert t.state.name == "PRUNED" and t.user_attrs["stalled"] is True
    assert t.user_attrs["last_epoch"] == 3 and max(t.intermediate_values) == 3
    records = [json.loads(x) for x in
               (Path(t.user_attrs["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in records] == [1, 2, 3] and records[-1]["stalled"]
    assert not any(x.get("stalled") for x in records[:-1])  # no verdict before the end
    assert all("test_acc" not in x for x in records)  # the test split is never used
    assert not (out / "best.yaml").exists()  # no complete trial: no best recipe
    assert "stalled ep 3" in (out / "results.md").read_text()


def test_search_end_to_end_with_best_yaml_and_report(recipe, tmp_path):
    out = tmp_path / "s"
    r = cli(["search", str(recipe), "--out", str(out), "--trials", "4", "--parallel", "2",
             *BUDGET])
    assert r.returncode == 0, r.stderr
    study = study_of(out)
    assert len(study.trials) == 4
    assert all(t.state.is_finished() for t in study.trials)
    assert study.trials[0].user_attrs.get("recipe") is True  # the recipe's own settings
    assert study.trials[0].params["kd.tau"] == 3.0
    workers = {t.user_attrs["worker"]["pid"] for t in study.trials}
    assert len(workers) == 2  # two processes shared the study
    assert json.loads((out / "search.json").read_text())["parallel"] == 2  # for --resume
    for t in study.trials:
        run_dir = Path(t.user_attrs["run_dir"])
        assert run_dir.parent == out / "trials" and (run_dir / "config.yaml").is_file()
        cfg = make_config(run_dir / "config.yaml")
        assert cfg.train.epochs == 3 and cfg.hints.stage.epochs == 1  # the budget
        assert cfg.kd.tau == t.params["kd.tau"]
        assert cfg.hints.pairs == [t.params["pair"].split("/")]
        if t.state.name == "COMPLETE":
            summary = json.loads((run_dir / "summary.json").read_text())
            assert summary["test_acc"] is None and t.value == summary["val_acc"]
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert done, "no trial completed"
    best = max(done, key=lambda t: t.value)
    # best.yaml: a recipe of the best trial, at full length (no budget, no out)
    cfg = make_config(out / "best.yaml")
    assert cfg.hints.pairs == [best.params["pair"].split("/")]
    assert cfg.kd.tau == best.params["kd.tau"]
    assert cfg.kd.lambda_init == best.params["kd.lambda_init"]
    assert cfg.hints.stage.optim.lr == best.params["hints.stage.optim.lr"]
    assert cfg.train.epochs == 40 and cfg.hints.stage.epochs == 15 and cfg.out is None
    assert f"trial {best.number}" in (out / "best.yaml").read_text()
    # the ranked table, where people look
    table = (out / "results.md").read_text()
    assert "| rank | trial | pair | regressor | hint lr | tau | lambda | validation |" in table
    first_row = next(x for x in table.splitlines() if x.startswith("| 1 |"))
    assert f"| {best.number}" in first_row and f"{100 * best.value:.2f}%" in first_row
    moved = tmp_path / "moved"  # a search directory keeps working when moved
    out.rename(moved)
    assert json.loads((moved / "search.json").read_text())["storage"] == ""
    out = moved
    assert main(["report", str(out), "--out", str(tmp_path / "rep")]) == 0  # in this process
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "| rank | trial |" in text and "Optimisation history" in text
    assert (tmp_path / "rep" / "history.png").stat().st_size > 1000
    assert (tmp_path / "rep" / "importance.png").is_file() or "not drawn" in text


def test_killed_search_resumes_finished_trials_kept_and_the_cut_trial_continued(recipe,
                                                                                 tmp_path,
                                                                                 capsys):
    out = tmp_path / "s"
    args = ["search", str(recipe), "--out", str(out), "--trials", "3", *BUDGET]
    # each trial checkpoints 1 hint epoch + transition + 3 KD epochs + transition = 6 times:
    # the 9th checkpoint is trial 1's first KD epoch
    r = cli(args, kill_at="checkpoint:9")
    assert r.returncode == 2 and "--resume" in r.stderr
    before = study_of(out).trials
    assert [t.state.name for t in before][:2] == [before[0].state.name, "RUNNING"]
    assert before[0].state.is_finished() and len(before) == 2
    cut = Path(before[1].user_attrs["run_dir"])
    assert any((cut / "checkpoints").iterdir())
    r = cli(["search", "--resume", str(out)])
    assert r.returncode == 0, r.stderr
    after = study_of(out).trials
    assert len(after) == 3 and all(t.state.is_finished() for t in after)
    # the finished trial is untouched; the cut one continued from its own checkpoint
    assert after[0].state == before[0].state and after[0].value == before[0].value
    assert after[0].datetime_complete == before[0].datetime_complete
    assert after[1].params == before[1].params and after[1].user_attrs["resumed"] == 1
    log = (out / "logs" / "worker-0.log").read_text()
    assert f"trial 1: continuing {cut}" in log and "resuming at stage kd, epoch 1" in log
    records = [json.loads(x) for x in (cut / "metrics.jsonl").read_text().splitlines()]
    assert [(x["stage"], x["epoch"]) for x in records] == [
        ("hints", 1), ("kd", 1), ("kd", 2), ("kd", 3)][:len(records)]
    # resume refuses a changed search
    capsys.readouterr()
    assert main(["search", "--resume", str(out), "--trials", "5"]) == 2  # before any process
    assert "keeps the search's 3 trials" in capsys.readouterr().err


def _stopped_worker(search_dir: Path, timeout: float = 300) -> int:
    """The pid of the search's worker once it has frozen itself (SIGSTOP) in its first
    trial, read from the trial's recorded owner."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            owners = [t.user_attrs.get("worker") for t in study_of(search_dir).trials]
        except Exception:  # the study is not created yet
            owners = []
        for owner in filter(None, owners):
            stat = Path(f"/proc/{owner['pid']}/stat")
            if stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "T":
                return owner["pid"]
        time.sleep(0.1)
    raise AssertionError(f"no worker of {search_dir} stopped in {timeout} s")


def test_two_processes_join_one_sqlite_study(recipe, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    storage = f"sqlite:///{a / 'study.db'}"
    short = ["--budget", "train.epochs=2", "hints.stage.epochs=1"]
    # the first process's worker freezes after its first checkpoint (trial 0 under way), so
    # the second process joins while the first still holds a trial, whatever the machine's
    # speed; it runs the other 3, then the first finishes its one
    first = subprocess.Popen([sys.executable, "-m", "fitnets", "search", str(recipe), "--out",
                              str(a), "--trials", "4", *short], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True,
                             env=fitnets_env("save:1:STOP"))
    frozen = None
    try:
        frozen = _stopped_worker(a)
        second = cli(["search", str(recipe), "--out", str(b), "--storage", storage, "--trials",
                      "4", *short])  # fitnets_env: the kill hook is not inherited
    finally:
        if frozen:
            os.kill(frozen, signal.SIGCONT)
        else:
            first.kill()
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    assert second.returncode == 0, second.stderr
    assert "joined the existing study 'digits-fitnet'" in second.stdout
    trials = study_of(a).trials
    assert len(trials) == 4 and all(t.state.is_finished() for t in trials)
    dirs = {Path(t.user_attrs["run_dir"]).parent.parent for t in trials}
    assert dirs == {a.resolve(), b.resolve()}  # both processes ran trials of the one study
    ran_in_a = [t.number for t in trials
                if Path(t.user_attrs["run_dir"]).is_relative_to(a.resolve())]
    assert ran_in_a == [0]  # the frozen one's; the second process ran the other 3
    assert len({t.number for t in trials}) == 4
    # a process measuring something else is refused, naming the difference
    r = cli(["search", str(recipe), "--out", str(tmp_path / "c"), "--storage", storage,
             "--budget", "train.epochs=5", "hints.stage.epochs=1"])
    assert r.returncode == 2 and "searches something else" in r.stderr
    assert "budget" in r.stderr
