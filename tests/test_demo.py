"""`fitnets demo`: the whole method on scikit-learn's digits, in its quick form."""

import pytest

pytest.importorskip("sklearn")

from fitnets.demo import demo  # noqa: E402


def test_quick_demo_trains_teacher_and_three_students(tmp_path, capsys):
    rows = demo(tmp_path / "demo", quick=True, verbose=False)
    assert [r["method"] for r in rows] == ["teacher", "student: backprop", "student: KD",
                                           "student: hints + KD (FitNet)"]
    students = rows[1:]
    assert len({r["params"] for r in students}) == 1  # one student, three ways
    assert rows[0]["params"] > 5 * students[0]["params"]  # the teacher is much larger
    assert all(0.0 <= r["test_acc"] <= 1.0 for r in rows)
    assert all(r["early_acc"] is None for r in rows)  # quick: fewer than 5 epochs
    table = (tmp_path / "demo" / "results.md").read_text()
    assert "hints + KD (FitNet)" in table and table in capsys.readouterr().out
    for name in ("teacher", "backprop", "kd", "fitnet"):
        assert (tmp_path / "demo" / name / "summary.json").is_file()
