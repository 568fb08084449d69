"""Models from the user's code: file.py:fn and package.module:fn, and their errors."""

import sys
import textwrap

import pytest
import torch
from torch import nn

from fitnets.checkpoint import save_weights
from fitnets.errors import FitnetsError
from fitnets.models import build_model
from fitnets.models.user import load_state

TINY_RESNET = textwrap.dedent('''
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv = nn.Conv2d(c, c, 3, padding=1)

        def forward(self, x):
            return torch.relu(x + self.conv(x))

    class TinyResNet(nn.Module):
        def __init__(self, num_classes, in_channels):
            super().__init__()
            self.stem = nn.Conv2d(in_channels, 8, 3, padding=1)
            self.stage1 = nn.Sequential(Block(8), Block(8))
            self.down = nn.Conv2d(8, 16, 3, stride=2, padding=1)
            self.stage2 = nn.Sequential(Block(16))
            self.head = nn.Linear(16, num_classes)

        def forward(self, x):
            x = self.stage2(self.down(self.stage1(self.stem(x))))
            return self.head(x.mean((2, 3)))

    def tiny(num_classes=10, in_channels=3):
        return TinyResNet(num_classes, in_channels)

    def only_classes(num_classes):
        return nn.Linear(4, num_classes)

    def not_a_module(num_classes=10):
        return "oops"
''')


@pytest.fixture
def user_file(tmp_path):
    path = tmp_path / "my_nets.py"
    path.write_text(TINY_RESNET)
    return path


def test_file_builder_gets_the_arguments_it_accepts(user_file) -> None:
    model = build_model(f"{user_file}:tiny", num_classes=5, in_channels=1)
    assert type(model).__name__ == "TinyResNet" and not hasattr(model, "input_shape")
    assert model(torch.randn(2, 1, 12, 12)).shape == (2, 5)
    # a builder without in_channels gets num_classes only
    assert build_model(f"{user_file}:only_classes", 6, 3, False).out_features == 6


def test_module_builder_on_sys_path(tmp_path, monkeypatch) -> None:
    pkg = tmp_path / "byo_pkg_for_test"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(TINY_RESNET)
    monkeypatch.syspath_prepend(str(tmp_path))
    model = build_model("byo_pkg_for_test.nets:tiny", num_classes=4)
    assert model.head.out_features == 4 and model.stem.in_channels == 3
    sys.modules.pop("byo_pkg_for_test.nets", None)
    sys.modules.pop("byo_pkg_for_test", None)


def test_builtin_names_pass_through() -> None:
    assert build_model("resnet20", 3, 3, True).fc.out_features == 3


def test_errors_are_actionable(user_file, tmp_path) -> None:
    with pytest.raises(FitnetsError, match="cannot import module 'no_such_pkg_xyz.nets'"):
        build_model("no_such_pkg_xyz.nets:tiny")
    with pytest.raises(FitnetsError, match="does not exist"):
        build_model(f"{tmp_path / 'missing.py'}:tiny")
    with pytest.raises(FitnetsError, match="no function 'tinny'") as e:
        build_model(f"{user_file}:tinny")
    assert "only_classes" in str(e.value) and "tiny" in str(e.value)
    with pytest.raises(FitnetsError, match="returned str, not a torch.nn.Module"):
        build_model(f"{user_file}:not_a_module")
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('bad import')\n")
    with pytest.raises(FitnetsError, match="bad import"):
        build_model(f"{broken}:f")


def test_load_state_reuses_the_run_loader(user_file, tmp_path) -> None:
    torch.manual_seed(0)
    src = build_model(f"{user_file}:tiny", num_classes=3)
    save_weights({"state_dict": src.state_dict()}, tmp_path / "w.pt")
    dst = load_state(build_model(f"{user_file}:tiny", num_classes=3), tmp_path / "w.pt")
    for k, v in src.state_dict().items():
        assert torch.equal(v, dst.state_dict()[k])
    with pytest.raises(FitnetsError, match="do not fit"):
        load_state(build_model(f"{user_file}:tiny", num_classes=4), tmp_path / "w.pt")
    assert isinstance(dst, nn.Module)
