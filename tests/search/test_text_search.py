"""fitnets search on text (data.name=text): trials of a language model are selected and pruned
on validation perplexity, lower is better; the pairs are the GPTs' blocks. A real Optuna study
in SQLite: the ranking and best.yaml from told values, then real trials of a tiny GPT."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

# integration: optuna, PyYAML (.ci/run's locked run checks these under its pins)
pytestmark = pytest.mark.integration

optuna = pytest.importorskip("optuna")

from fitnets.config import make_config  # noqa: E402
from fitnets.search import worker  # noqa: E402
from fitnets.search.command import prepare  # noqa: E402
from fitnets.search.results import write_results  # noqa: E402
from fitnets.search.study import load_spec, open_study  # noqa: E402

GPT = {"name": "gpt", "width": 16, "depth": 2, "heads": 2}


def corpus(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for i in range(20):  # 10% of the documents held out for validation, 10% for test
        (folder / f"{i}.txt").write_text(" ".join(f"{w} {w[::-1]}" for w in
                                                  ["abc", "defg", "hij", "klmno"] * (8 + i)))
    return folder


def recipe(tmp_path: Path, weights: str) -> Path:
    path = tmp_path / "text-fitnet.yaml"
    path.write_text(yaml.safe_dump({
        "method": "fitnet", "device": "cpu",
        "data": {"name": "text", "path": str(corpus(tmp_path / "corpus")),
                 "root": str(tmp_path), "block_size": 16, "batch_size": 8},
        "teacher": {**GPT, "weights": weights}, "student": {**GPT, "width": 8, "depth": 4},
        "hints": {"pairs": [["blocks.1", "blocks.0"]], "stage": {"epochs": 1}},
        "kd": {"tau": 2.0}, "train": {"epochs": 3, "optim": {"name": "adam", "lr": 0.01}},
        "perf": {"teacher_cache": "off", "precision": "fp32"}}))
    return path


def test_a_text_search_ranks_and_picks_the_lowest_perplexity(tmp_path):
    weights = tmp_path / "teacher.pt"
    weights.write_bytes(b"")  # no trial runs here
    out = tmp_path / "s"
    _, rows, _ = prepare(str(recipe(tmp_path, str(weights))), [], out, trials=3, storage=None,
                         study=None, space_texts=[], budget_texts=[], parallel=1)
    spec = load_spec(out)
    assert spec.metric == "val_ppl"
    # the pairs offered are the GPTs' blocks, the recipe's first, mapped token by token
    assert (rows[0]["guided"], rows[0]["hint"]) == ("blocks.1", "blocks.0")
    assert rows[0]["guided_shape"] == (16, 8) and rows[0]["hint_shape"] == (16, 16)
    assert spec.train_size > 0  # training blocks, each a step's row
    study = open_study(spec)
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    told = {}
    for value in (20.0, 15.0, 30.0):
        trial = worker.next_trial(study, spec, out)
        study.tell(trial, value)
        told[trial.number] = value
    table = write_results(out)
    rows = [x for x in table.splitlines() if x.startswith("| ") and x[2].isdigit()]
    assert [r.split("|")[2].strip().split()[0] for r in rows] == ["1", "0", "2"]  # lowest first
    assert "val ppl 15.00" in rows[0]
    best = (out / "best.yaml").read_text()
    assert "trial 1, validation perplexity ppl 15.00" in best
    assert make_config(out / "best.yaml").kd.tau == study.trials[1].params["kd.tau"]
    assert "median pruning on validation perplexity" in (out / "results.md").read_text()


@pytest.mark.slow
def test_text_search_trials_run_and_report_their_perplexity(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    teacher = tmp_path / "teacher"
    path = recipe(tmp_path, str(teacher))
    args = [sys.executable, "-m", "fitnets"]
    r = subprocess.run([*args, "train", str(path), f"out={teacher}", "train.epochs=4",
                        *(f"model.{k}={v}" for k, v in GPT.items()), "--quiet"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "s"
    r = subprocess.run([*args, "search", str(path), "--out", str(out), "--trials", "2",
                        "--quiet"], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    spec = load_spec(out)
    study = open_study(spec)
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert done, [t.user_attrs for t in study.trials]
    for t in done:
        summary = json.loads((Path(t.user_attrs["run_dir"]) / "summary.json").read_text())
        assert t.value == summary["val_ppl"] < summary["unigram_ppl"]  # it learned
        assert summary["test_ppl"] is None  # a search never reads the test split
    best = min(done, key=lambda t: t.value)
    assert f"trial {best.number}, validation perplexity" in (out / "best.yaml").read_text()
