"""fitnets search's study without training: the same seed samples the same trials, a trial
left running without an owner is claimed, --resume keeps --parallel, a search that completes
no trial exits with code 3, and the median rule waits for the stall guard. Real Optuna
studies in SQLite files; no trial runs."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import yaml

# integration: optuna, PyYAML (.ci/run's locked run checks these under its pins)
pytestmark = pytest.mark.integration

optuna = pytest.importorskip("optuna")
pytest.importorskip("sklearn")

from fitnets import stall  # noqa: E402
from fitnets.search import command, worker  # noqa: E402
from fitnets.search.command import NO_TRIAL_COMPLETED, prepare, search  # noqa: E402
from fitnets.search.study import load_spec, open_study  # noqa: E402


@pytest.fixture
def recipe(tmp_path, digits) -> Path:
    weights = tmp_path / "teacher.pt"
    weights.write_bytes(b"")  # no trial runs here
    path = tmp_path / "digits-fitnet.yaml"
    path.write_text(yaml.safe_dump(dict(digits, teacher={"name": "digits_teacher",
                                                         "weights": str(weights)})))
    return path


def sampled(recipe: Path, out: Path, overrides=(), n: int = 4) -> list[dict]:
    """The values of ``n`` trials asked for one after the other, each told a value that
    depends on them only (as if it had run)."""
    prepare(str(recipe), list(overrides), out, trials=n, storage=None, study=None,
            space_texts=[], budget_texts=[], parallel=1)
    spec = load_spec(out)
    study = open_study(spec)
    values = []
    for _ in range(n):
        trial = worker.next_trial(study, spec, out)
        values.append(trial.params)
        study.tell(trial, trial.params["kd.tau"] / 8 + trial.params["kd.lambda_init"] / 16)
    assert worker.next_trial(study, spec, out) is None  # the study has its trials
    return values


def test_the_same_seed_samples_the_same_trials(recipe, tmp_path):
    a, b = sampled(recipe, tmp_path / "a"), sampled(recipe, tmp_path / "b")
    assert a == b  # the process ids differ; the seed and the trial numbers do not
    assert a[0]["kd.tau"] == 3.0 and a[0]["pair"] == "conv3/conv2"  # the recipe's own first
    assert len({json.dumps(v, sort_keys=True) for v in a}) == 4  # 2 sampled by TPE
    other = sampled(recipe, tmp_path / "c", ["seed=1"])
    assert other[0] == a[0] and other[1:] != a[1:]


def test_a_trial_left_running_without_an_owner_is_claimed(recipe, tmp_path, monkeypatch):
    out = tmp_path / "s"
    prepare(str(recipe), [], out, trials=3, storage=None, study=None, space_texts=[],
            budget_texts=[], parallel=1)
    spec = load_spec(out)
    study = open_study(spec)
    lost = study.ask()  # a process killed before it recorded itself as the owner
    fresh = worker.next_trial(study, spec, out)  # another machine's process might be
    assert fresh.number == lost.number + 1      # recording itself: left alone at first
    study.tell(fresh, 0.5)
    monkeypatch.setattr(worker, "OWNERLESS_AFTER_S", 0.0)  # ... but not for ever
    claimed = worker.next_trial(study, spec, out)
    assert claimed.number == lost.number
    frozen = study.trials[lost.number]
    assert frozen.user_attrs["worker"]["pid"] > 0 and frozen.user_attrs["resumed"] == 1
    assert set(frozen.params) == set(spec.dims())  # its values sampled with the claim


def test_processes_of_one_study_share_one_ask_lock_whatever_their_out(recipe, tmp_path):
    """Two commands joining one study from two --out directories ask one at a time: with a
    lock per directory both once saw 7 of 8 trials started and a study ended with 9."""
    storage = f"sqlite:///{tmp_path / 'a' / 'study.db'}"
    for out in ("a", "b"):
        prepare(str(recipe), [], tmp_path / out, trials=2, storage=storage, study=None,
                space_texts=[], budget_texts=[], parallel=1)
    spec_a, spec_b = load_spec(tmp_path / "a"), load_spec(tmp_path / "b")
    assert worker.lock_file(spec_a.storage) == worker.lock_file(spec_b.storage) \
        == tmp_path / "a" / "study.db.ask.lock"
    url = "postgresql://u@host/db"
    assert worker.lock_file(url) == worker.lock_file(url) != worker.lock_file(url + "2")
    study = open_study(spec_b)
    asked = []
    with worker.ask_lock(spec_a.storage):  # process a is asking ...
        other = threading.Thread(
            target=lambda: asked.append(worker.next_trial(study, spec_b, tmp_path / "b")))
        other.start()
        other.join(0.5)
        assert other.is_alive() and not asked  # ... so b waits for it
    other.join(30)
    assert not other.is_alive() and asked[0].number == 0


def test_resume_keeps_parallel_and_no_completed_trial_exits_3(recipe, tmp_path, monkeypatch):
    started = []
    monkeypatch.setattr(command, "_workers", lambda out, n: started.append(n) or [])
    out = tmp_path / "s"
    with pytest.raises(SystemExit) as e:
        search(str(recipe), [], out, trials=2, parallel=3, verbose=False)
    assert e.value.code == NO_TRIAL_COMPLETED and not (out / "best.yaml").exists()
    assert json.loads((out / "search.json").read_text())["parallel"] == 3
    with pytest.raises(SystemExit):
        search(None, [], out, resume=True, verbose=False)
    with pytest.raises(SystemExit):
        search(None, [], out, resume=True, parallel=1, verbose=False)
    with pytest.raises(SystemExit):
        search(None, [], out, resume=True, verbose=False)
    assert started == [3, 3, 1, 1]  # a given --parallel is kept for the next --resume


def test_the_median_rule_waits_for_the_stall_guard_and_the_warm_up():
    # digits: 36 steps an epoch, 15 KD epochs: no epoch is judged (the guard judges the end)
    assert not any(worker.may_prune(e, 15, 36) for e in range(1, 16))
    assert not worker.may_prune(3, 10, None)  # steps unknown: never
    long = [e for e in range(1, 41) if worker.may_prune(e, 40, 1000)]
    # judged once both the guard may judge and the warm-up is over, never at the last epoch
    # (it completes anyway)
    assert long == [e for e in range(1, 40)
                    if stall.ready(e * 1000, 40_000) and e >= worker.WARMUP * 40]
    assert long and long[0] > 1
