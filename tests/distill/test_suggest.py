"""Layer-pair suggestions between any two networks."""

from torch import nn

from fitnets.distill.suggest import candidate_layers, format_suggestions, suggest_pairs
from fitnets.models import build_model


def _by_pair(rows: list) -> dict:
    return {(r["guided"], r["hint"]): r for r in rows}


def test_resnets_use_their_stages_and_their_defaults() -> None:
    student, teacher = build_model("resnet20"), build_model("resnet56")
    names = [n for n, _ in candidate_layers(teacher, (3, 32, 32))]
    assert names == ["conv1", "layer1", "layer2", "layer3"]  # no bn1, no global pool
    rows = suggest_pairs(student, teacher, (3, 32, 32))
    assert len(rows) == 16
    (default,) = [r for r in rows if r["default"]]
    assert (default["guided"], default["hint"]) == ("layer2", "layer2")
    assert default["kind"] == "none" and default["params"] == 0
    row = _by_pair(rows)[("layer2", "layer3")]  # 32x16x16 -> 64x8x8: the paper's valid conv
    assert row["kind"] == "conv" and row["params"] == (32 * 81 + 1) * 64
    assert row["guided_depth"] == 0.5 and row["hint_depth"] == 0.75


def test_paper_pair_is_default_and_impossible_pairs_are_flagged() -> None:
    student, teacher = build_model("fitnet4"), build_model("cifar_teacher")
    rows = suggest_pairs(student, teacher, (3, 32, 32), kind="conv")
    (default,) = [r for r in rows if r["default"]]
    assert (default["guided"], default["hint"]) == ("conv11", "conv2")
    assert default["possible"] and default["params"] == (80 * 9 + 1) * 384
    late = _by_pair(rows)[("conv17", "conv1")]  # 4x4 guided, 15x15 hint: no valid conv
    assert not late["possible"] and late["params"] is None and "larger" in late["error"]
    text = format_suggestions(rows)
    assert "conv: impossible" in text
    star = [line for line in text.splitlines() if line.startswith("*")]
    assert len(star) == 1 and "conv11" in star[0] and "192x6x6" in star[0]


class _UserNet(nn.Module):
    """No defaults; one `features` Sequential, so its children are candidates too."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Linear(16 * 8 * 8, 10)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


def test_user_net_without_defaults_gets_the_middle_pair() -> None:
    student = _UserNet()
    names = [n for n, _ in candidate_layers(student, (3, 32, 32))]
    assert names == ["features.0", "features.2", "features.3", "features.5", "features"]
    rows = suggest_pairs(student, build_model("resnet20"), (3, 32, 32), kind="auto")
    (default,) = [r for r in rows if r["default"]]
    assert default["guided"] == "features.3" and default["hint"] == "layer2"
    assert default["guided_depth"] == 0.4 and default["hint_depth"] == 0.5
    assert all(r["possible"] for r in rows)  # auto always has fc to fall back on
    big = _by_pair(rows)[("features.5", "conv1")]
    assert big["kind"] == "fc" and big["params"] == (16 * 8 * 8 + 1) * 16 * 32 * 32


def test_a_deeper_default_is_still_offered_and_marked() -> None:
    student = build_model("resnet20")
    student.default_guided = "layer2.1"  # inside a stage: not a listed candidate by itself
    rows = suggest_pairs(student, build_model("resnet56"), (3, 32, 32))
    (default,) = [r for r in rows if r["default"]]
    assert (default["guided"], default["hint"]) == ("layer2.1", "layer2")
    guided = list(dict.fromkeys(r["guided"] for r in rows))
    assert guided == ["conv1", "layer1", "layer2.1", "layer2", "layer3"]
