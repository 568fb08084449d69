"""Shared fixtures: small, learnable datasets written in the genuine file formats."""

from __future__ import annotations

import copy
import functools
import gzip
import importlib.util
import os
import pickle
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

# Under pytest-xdist (`-n auto`, as .ci/run runs) each worker gets one core: one torch thread, and
# the commands the tests start (fitnets, torchrun) inherit OMP_NUM_THREADS=1. Two workers
# with two threads each on two cores spin against each other.
# The suite never touches the network: Hugging Face's hub is told so before anything imports
# it (huggingface_hub reads HF_HUB_OFFLINE once, at import; a test that set it later still
# waited on the hub's retries, 23 s).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
THREADS = max(1, min(2, os.cpu_count() or 1) // WORKERS)
if WORKERS > 1:
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(THREADS)
torch.set_num_threads(THREADS)


# the project's sources, for `python -m fitnets` in a subprocess (tests run from a checkout)
SRC = str(Path(importlib.util.find_spec("fitnets").origin).parents[1])


def fitnets_env(kill_at: str | None = None, env: dict | None = None) -> dict:
    """The environment of a fitnets subprocess: this checkout's sources on PYTHONPATH, the
    test kill hook FITNETS_TEST_KILL_AT=EVENT:N (fitnets/faults.py) set only by ``kill_at``
    and never inherited from the caller, ``env`` added."""
    environ = {k: v for k, v in os.environ.items() if k != "FITNETS_TEST_KILL_AT"}
    environ.update(PYTHONPATH=SRC, **(env or {}))
    if kill_at:
        environ["FITNETS_TEST_KILL_AT"] = kill_at
    return environ


def fitnets_cli(args: list[str], kill_at: str | None = None, env: dict | None = None,
                quiet: bool = True, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    """``python -m fitnets ARGS [--quiet]`` in a subprocess (environment: fitnets_env, with
    this process's thread count, same_threads, unless ``env`` sets another), its output
    captured; ``kw`` goes to subprocess.run."""
    return subprocess.run([sys.executable, "-m", "fitnets", *args, *(["--quiet"] * quiet)],
                          env=fitnets_env(kill_at, {**same_threads(), **(env or {})}),
                          capture_output=True, text=True, timeout=timeout, **kw)


def same_threads() -> dict:
    """For a subprocess whose result is compared bit for bit with a run in this process: the
    thread count this process's torch uses (under ``-n 0`` a subprocess would otherwise take
    every core, and a reduction split another way can differ in its last bit)."""
    return {"OMP_NUM_THREADS": str(torch.get_num_threads())}


SHARED_FIXTURE = re.compile(r"""scope\s*=\s*["'](?:module|package|session)["']""")


@functools.cache
def _shares_a_fixture(path: Path) -> bool:
    """The test file defines a fixture its tests share (a trained teacher, a finished run)."""
    try:
        return bool(SHARED_FIXTURE.search(path.read_text(encoding="utf-8")))
    except OSError:
        return False


def _unit(root: Path, nodeid: str) -> str:
    """The work unit a test belongs to under -n N: its file when the file shares a fixture,
    else the test itself."""
    path = nodeid.split("::", 1)[0]
    return path if _shares_a_fixture(root / path) else nodeid


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """``-n N`` (``--dist loadscope``, pyproject's addopts): the tests of a file that defines
    a module- or session-scoped fixture run in one worker, so the fixture is built once, not
    once a worker; every other test is a work unit of its own. Units go out largest first.
    (xdist's ``loadgroup`` marks do not group under pytest 9: xdist renames ``_nodeid``, which
    pytest 9's ``nodeid`` no longer reads.)"""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    root = config.rootpath

    class SharedFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _unit(root, nodeid)

    return SharedFixtureScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    """Under ``-n N`` each worker collects the suite and the scheduler above hands out its
    units in collection order, after the shared-fixture files (largest first): a test marked
    ``slow`` (a subprocess run, a real training: 10-40 s) collected late could start when the
    other worker had nothing left, and the run would wait on one core. So the units holding a
    slow test are collected first (a stable sort: the files keep their tests' order, and
    every worker sorts alike, as xdist requires)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    root = config.rootpath
    slow = {_unit(root, item.nodeid) for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: _unit(root, item.nodeid) not in slow)


@pytest.fixture(autouse=True)
def _no_user_cache_setting(monkeypatch):
    """Tests choose cache folders themselves: a user's $FITNETS_CACHE must not leak in."""
    monkeypatch.delenv("FITNETS_CACHE", raising=False)


def ran_to_end(code: int, out: Path) -> bool:
    """A ``fitnets train``/``distill`` run ran to its end: exit 0, or exit 3
    (cli.FAILED_TO_LEARN: a stage ended stalled at chance) with summary.json saying so. Tiny
    test runs often end at chance; the tests that use this check something else (learning is
    tests/test_stall.py's)."""
    import json

    if code == 0:
        return True
    summary = Path(out) / "summary.json"
    return (code == 3 and summary.is_file()
            and json.loads(summary.read_text()).get("stalled") is True)


def idx_file(path: Path, a: np.ndarray, gz: bool = False) -> None:
    """Write ``a`` (uint8) in the IDX format: magic (0, 0, 0x08, ndim), big-endian dims."""
    data = struct.pack(">BBBB", 0, 0, 0x08, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape)
    data += a.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)


def synthetic_digits(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """28x28 images whose class (0-9) is the position of a bright 6x6 square, plus noise."""
    y = rng.integers(0, 10, n)
    x = rng.integers(0, 60, (n, 28, 28))
    for i, c in enumerate(y):
        r, col = 2 + 8 * (c // 4), 2 + 6 * (c % 4)
        x[i, r:r + 6, col:col + 6] = 230
    return x.astype(np.uint8), y.astype(np.uint8)


def write_tiny_mnist(root: Path, n_train: int = 240, n_test: int = 80, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n, gz in (("train", n_train, True), ("t10k", n_test, False)):
        x, y = synthetic_digits(n, rng)
        idx_file(root / f"{prefix}-images-idx3-ubyte", x, gz)
        idx_file(root / f"{prefix}-labels-idx1-ubyte", y, gz)
    return root


@pytest.fixture
def tiny_mnist(tmp_path: Path) -> Path:
    """A learnable MNIST look-alike in IDX files (train gzip-compressed, test raw)."""
    return write_tiny_mnist(tmp_path / "data")


def real_data_root() -> Path | None:
    root = os.environ.get("FITNETS_DATA")
    if root and (Path(root) / "mnist" / "train-images-idx3-ubyte").exists():
        return Path(root)
    return None


# The digits recipe the search tests (tests/search/) search: scikit-learn's 8x8 digits,
# small nets. Here, not in a tests/search/conftest.py: a second conftest module shadows this
# one for the tests' `from conftest import ...` in whichever process imports it first.
DIGITS = {
    "method": "fitnet", "device": "cpu", "seed": 0,
    "data": {"name": "digits", "val_size": 300, "batch_size": 32, "preprocess": "scale"},
    "model": {"name": "digits_teacher"}, "teacher": {"name": "digits_teacher"},
    "student": {"name": "digits_student"},
    "train": {"epochs": 40, "optim": {"name": "adam", "lr": 0.003}},
    "hints": {"stage": {"epochs": 15, "optim": {"name": "adam", "lr": 0.01}}},
    "kd": {"tau": 3.0, "lambda_init": 4.0, "lambda_start": 1, "lambda_saturate": 30,
           "lambda_final": 0.0},
}


@pytest.fixture(scope="session")
def digits() -> dict:
    """The digits recipe (copy it before changing a nested key)."""
    return copy.deepcopy(DIGITS)


# An image folder of the user's kind, for the data, distill and DDP tests.
COLOURS = {"cat": (200, 40, 40), "dog": (40, 200, 40), "owl": (40, 40, 200)}


def photos(root: Path, n_train=20, n_test=6, layout=("train", "test"), gray=False,
           ext="jpg", seed=0) -> Path:
    """Class-coloured photos of mixed sizes and aspect ratios."""
    rng = np.random.default_rng(seed)
    for split, n in zip(layout, (n_train, n_test)):
        for c, col in COLOURS.items():
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                w, h = (int(v) for v in rng.integers(24, 70, 2))
                a = (rng.integers(0, 50, (h, w, 3)) + np.array(col) * rng.uniform(0.7, 1))
                img = Image.fromarray(a.clip(0, 255).astype(np.uint8))
                img = img.convert("L") if gray else img
                img.save(d / f"{i}.{ext}", **({"quality": 90} if ext in ("jpg", "JPEG") else {}))
    return root


def train_tiny_lm(root: Path, out: Path, epochs: int = 1) -> Path:
    """A real `fitnets train` of a tiny GPT (width 16, 2 blocks, byte tokens, blocks of 16)
    on 12 short documents written under ``root``, into ``out`` (seconds on a CPU)."""
    from fitnets.config import make_config
    from fitnets.run import run

    corpus = root / "corpus"
    corpus.mkdir(exist_ok=True)
    for i in range(12):
        (corpus / f"{i}.txt").write_text(f"doc {i}: " + "lorem ipsum dolor sit amet " * (4 + i))
    run(make_config(None, ["device=cpu", "data.name=text", f"data.path={corpus}",
                           f"data.root={root}", "data.block_size=16", "data.batch_size=8",
                           "model.name=gpt", "model.width=16", "model.depth=2",
                           "model.heads=2", f"train.epochs={epochs}", "train.optim.name=adam",
                           "train.optim.lr=0.01", f"out={out}"]), "train", out, verbose=False)
    return out


# CIFAR's canonical pickles (tests/data/test_cifar.py, tests/test_benchmarks.py)
def pickled(obj) -> bytes:
    return pickle.dumps(obj, protocol=2)  # the python-2 era protocol of the real files


def cifar10_members(rng, per_batch=6, n_test=5) -> dict[str, bytes]:
    """The members of cifar-10-batches-py: random images, ``per_batch`` a training batch."""
    m = {}
    for i in range(1, 6):
        m[f"data_batch_{i}"] = pickled({
            b"batch_label": f"training batch {i} of 5".encode(),
            b"labels": rng.integers(0, 10, per_batch).tolist(),
            b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
        })
    m["test_batch"] = pickled({b"labels": rng.integers(0, 10, n_test).tolist(),
                               b"data": rng.integers(0, 256, (n_test, 3072), dtype=np.uint8)})
    m["batches.meta"] = pickled({b"label_names": [f"c{i}".encode() for i in range(10)]})
    return m
