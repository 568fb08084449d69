"""Two CPU processes (gloo) through the real torchrun: the same result as one process with
the same global batch, elastic restart after a killed worker, resume with another count,
workers that end with their agent."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as td

import fitnets
from fitnets.checkpoint import load_weights
from fitnets.config import make_config
from fitnets.distributed import Dist
from fitnets.run import run

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import procs  # noqa: E402  (tools/procs.py: /proc checks shared with tools/orphan_check.py)

needs_gloo = pytest.mark.skipif(not (td.is_available() and td.is_gloo_available()),
                                reason="torch.distributed with gloo is not available")

# Plain SGD: float rounding differences (the 2-process gradient is the mean of two half-batch
# means) stay at rounding size. Adam and RMSProp divide by sqrt(v) and amplify them to ~1e-3
# in this tiny run, as much as running one process with 1 or 2 threads does. fp32 and the
# contiguous layout: under bf16 autocast or channels_last (the CPU defaults) the half-batch
# split changes rounding or the convolution kernels, and maxout's near-ties turn that into
# ~3e-4 weight differences after 4 epochs (measured).
ARGS = ["device=cpu", "perf.precision=fp32", "perf.channels_last=false", "data.name=mnist",
        "data.download=false", "data.val_size=40",
        "data.batch_size=32", "train.optim.name=sgd", "train.optim.lr=0.02",
        "hints.stage.optim.name=sgd", "hints.stage.optim.lr=0.005", "hints.reduction=mean",
        "student.init=torch", "method=fitnet", "hints.stage.epochs=2", "train.epochs=2",
        "data.augment_pad=2", "data.augment_flip=true"]
WEIGHT_ATOL = 1e-5  # measured: 1.2e-7 between 1 and 2 processes
LOSS_RTOL = 1e-5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_command(args: list[str], out: Path, *, restarts: int = 0,
                     kill: str | None = None, rdzv: str = "static",
                     resume: bool = False) -> tuple[list[str], dict]:
    """The command line and environment of a 2-process `fitnets distill` under torchrun
    (``resume``: --resume OUT, the run's own config)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(fitnets.__file__).parents[1])}
    for hook in ("FITNETS_TEST_KILL", "FITNETS_TEST_KILL_AT"):
        env.pop(hook, None)
    if kill:
        env["FITNETS_TEST_KILL"] = kill
    where = (["--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{_free_port()}"]
             if rdzv == "c10d"
             else ["--master-addr", "127.0.0.1", "--master-port", str(_free_port())])
    tail = ["--resume", str(out)] if resume else [*args, "--out", str(out)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", *where,
           "--max-restarts", str(restarts), "-m", "fitnets", "distill", *tail]
    return cmd, env


def torchrun(args: list[str], out: Path, **how):
    cmd, env = torchrun_command(args, out, **how)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)


def ran_to_end(done: subprocess.CompletedProcess, out: Path) -> bool:
    """The torchrun job ran to its end: exit 0, or a run whose stage the stall guard found at
    chance (summary.json stalled: true), after which every worker exits with 3 and torchrun
    with 1. These tiny runs compare process counts and resumes; learning is test_stall's."""
    if done.returncode == 0:
        return True
    summary = out / "summary.json"
    report = done.stderr.rsplit("ChildFailedError", 1)[-1]  # the last attempt's workers
    codes = set(re.findall(r"exitcode\s*:\s*(-?\d+)", report))
    return (codes == {"3"} and summary.exists()
            and json.loads(summary.read_text()).get("stalled") is True)


def records(run_dir: Path) -> list[dict]:
    out = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        r.pop("time")
        out.append(r)
    return out


def assert_close_runs(a: Path, b: Path, atol: float) -> float:
    wa, wb = (load_weights(d / "model.pt")["state_dict"] for d in (a, b))
    assert set(wa) == set(wb)
    diff = max((wa[k] - wb[k]).abs().max().item() for k in wa)
    assert diff <= atol, f"largest weight difference {diff}"
    ra, rb = records(a), records(b)
    assert [(r["stage"], r["epoch"]) for r in ra] == [(r["stage"], r["epoch"]) for r in rb]
    for x, y in zip(ra, rb):
        assert set(x) == set(y)
        for k, v in x.items():
            # same predictions, same schedule, same labels (strings, ints, tuples): equal;
            # only float losses may differ by the reduction order across processes
            if k.endswith("acc") or k in ("lambda", "lr") or not isinstance(v, float):
                assert v == y[k], (k, v, y[k])
            else:
                assert v == pytest.approx(y[k], rel=LOSS_RTOL), (k, v, y[k])
    return diff


def test_a_rank_takes_its_slice_and_weighs_its_share():
    x, y = torch.arange(7.0)[:, None], torch.arange(7)
    a, b = Dist(rank=0, world=2), Dist(rank=1, world=2)
    (xa, _, sa), (xb, yb, sb) = a.shard(x, y), b.shard(x, y)
    assert xa.flatten().tolist() == [0, 1, 2] and yb.tolist() == [3, 4, 5, 6]
    assert (sa, sb) == (3 / 7, 4 / 7)
    # DDP averages over 2 ranks: (w_a * mean_a + w_b * mean_b) / 2 == the batch mean
    la, lb = b.weigh(xa.mean(), sa), b.weigh(xb.mean(), sb)
    assert ((la + lb) / 2).item() == pytest.approx(x.mean().item())
    last = Dist(rank=0, world=3).shard(x[:2], y[:2])  # fewer images than ranks: rank 0 none
    assert len(last[1]) == 1 and last[2] == 0.0
    total = x.sum()
    assert Dist().shard(x, y)[2] == 1.0 and Dist().weigh(total, 1.0) is total  # 1 process


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from conftest import write_tiny_mnist

    base = tmp_path_factory.mktemp("ddp")
    root = write_tiny_mnist(base / "data", n_train=168, n_test=40)  # 128 to train on
    teacher = base / "teacher"
    run(make_config(None, [*ARGS, f"data.root={root}", "model.name=mnist_teacher",
                           "train.epochs=1"]), "train", teacher, verbose=False)
    args = [*ARGS, f"data.root={root}", f"teacher.weights={teacher}"]
    one = base / "one"
    run(make_config(None, args), "distill", one, verbose=False)
    two = base / "two"
    done = torchrun(args, two)
    assert ran_to_end(done, two), done.stderr[-3000:]
    return base, args, one, two, done


@pytest.mark.slow
@needs_gloo
def test_two_processes_match_one_process_with_the_same_global_batch(setup):
    _, _, one, two, done = setup
    assert_close_runs(one, two, WEIGHT_ATOL)
    assert ("global batch 32 = 2 x 16, lr 0.005 (hints) / 0.02 (kd) (as in the recipe)"
            in done.stdout)
    summary = json.loads((two / "summary.json").read_text())
    assert summary["epochs"] == {"hints:0": 2, "kd": 2}
    # rank 0 alone writes: one set of records, two checkpoints kept
    assert len(records(two)) == 4
    assert len(list((two / "checkpoints").glob("ckpt-*.pt"))) == 2


@pytest.mark.slow
@needs_gloo
@pytest.mark.parametrize("rdzv", ["c10d", "static"])
def test_elastic_restart_resumes_from_the_last_checkpoint(setup, rdzv):
    base, args, _, two, _ = setup
    out = base / f"elastic-{rdzv}"
    # rank 1 dies (SIGKILL) after its 1st checkpoint (stage 1, epoch 1); torchrun restarts
    # both workers, which find the run directory and resume it inside stage 1 under DDP.
    # Both rendezvous keep the agent's store across attempts: without our per-attempt key
    # prefix the restarted gloo workers hung or were refused (3 of 3 runs, torch 2.13).
    done = torchrun(args, out, restarts=1, kill="1:1", rdzv=rdzv)
    assert ran_to_end(done, out), done.stderr[-3000:]
    assert "elastic restart 1: resuming" in done.stdout
    assert_close_runs(two, out, atol=0.0)  # same process count: bit-exact


@pytest.mark.slow
@needs_gloo
def test_a_two_process_run_resumes_in_one_process(setup):
    base, args, one, _, _ = setup
    out = base / "cut"
    done = torchrun(args, out, restarts=0, kill="1:3")  # dies at the stage 1->2 transition
    assert done.returncode != 0
    assert not (out / "summary.json").exists()
    run(make_config(out / "config.yaml"), "distill", out, resume=True, verbose=False)
    # the generator is in lockstep on every rank: the same global batches follow; only the
    # float reduction order differs from the uninterrupted 1-process run
    assert_close_runs(one, out, WEIGHT_ATOL)


def test_restarted_workers_get_a_store_namespace_of_their_own(monkeypatch):
    import fitnets.distributed as fd

    made = []

    class FakeStore:
        def __init__(self, host, port, is_master):
            made.append((host, port, is_master))

    monkeypatch.setattr(fd.td, "TCPStore", FakeStore)
    monkeypatch.setattr(fd.td, "PrefixStore", lambda prefix, store: (prefix, store))
    env = {"MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29400", "RANK": "3", "WORLD_SIZE": "4",
           "TORCHELASTIC_USE_AGENT_STORE": "True", "TORCHELASTIC_RESTART_COUNT": "0"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert fd._restart_store() == {}  # first attempt: torch's own env:// init
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "2")
    got = fd._restart_store()
    assert got["store"][0] == "fitnets/attempt_2" and (got["rank"], got["world_size"]) == (3, 4)
    assert made == [("10.0.0.1", 29400, False)]  # a client of the agent's store
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "False")  # a new store per attempt
    assert fd._restart_store() == {}


def test_multi_node_elastic_runs_are_told_to_disable_the_shared_store(monkeypatch):
    import fitnets.distributed as fd

    for k, v in {"TORCHELASTIC_MAX_RESTARTS": "3", "GROUP_WORLD_SIZE": "2",
                 "TORCHELASTIC_USE_AGENT_STORE": "True"}.items():
        monkeypatch.setenv(k, v)
    assert "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1" in fd.elastic_advice()
    monkeypatch.setenv("GROUP_WORLD_SIZE", "1")  # one node: one agent, one restart count
    assert fd.elastic_advice() is None
    monkeypatch.setenv("GROUP_WORLD_SIZE", "2")
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "False")
    assert fd.elastic_advice() is None


def test_evaluation_shares_cover_every_row_once():
    for world in (1, 2, 3, 4):
        for n in (0, 1, 5, 40, 10001):
            shares = [Dist(rank=r, world=world).rows(n) for r in range(world)]
            assert shares[0][0] == 0 and shares[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(shares, shares[1:]))  # contiguous
            sizes = [hi - lo for lo, hi in shares]
            assert max(sizes) - min(sizes) <= 1


@pytest.mark.slow
@needs_gloo
def test_the_teacher_cache_is_computed_once_for_all_processes(setup, tmp_path):
    base, args, _, _, _ = setup
    # no translations, so the cache is valid; flips give it two views
    cached = [*args, "data.augment_pad=0"]
    one = tmp_path / "one"
    run(make_config(None, [*cached, "perf.teacher_cache=memory"]), "distill", one,
        verbose=False)
    os.environ["FITNETS_CACHE"] = str(tmp_path / "cache")  # torchrun's workers inherit it
    try:
        done = torchrun([*cached, "perf.teacher_cache=disk"], tmp_path / "two")
    finally:
        del os.environ["FITNETS_CACHE"]
    assert ran_to_end(done, tmp_path / "two"), done.stderr[-3000:]
    # both stages (hint maps, then logits): computed once, each rank a share of the rows
    assert done.stdout.count("computing it once, shared by 2 processes") == 2
    files = sorted(p.name for p in (tmp_path / "cache" / "teacher").iterdir())
    # two complete banks, each with its sidecar; no .part file or progress left over
    assert len(files) == 4 and sum(f.endswith(".bin") for f in files) == 2
    assert sum(f.endswith(".json") and not f.endswith(".part.json") for f in files) == 2
    assert_close_runs(one, tmp_path / "two", WEIGHT_ATOL)


def test_sync_batchnorm_is_chosen_by_device_and_refused_on_cpus():
    from torch import nn

    from fitnets.errors import FitnetsError

    def net():
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())

    m = net()
    bn_params = list(m[1].parameters())
    gpu = Dist(rank=0, world=2, device=torch.device("cuda", 0))
    out = gpu.sync_batchnorm(m)
    assert isinstance(out[1], nn.SyncBatchNorm)  # converted, same parameters
    assert all(a is b for a, b in zip(out[1].parameters(), bn_params))
    off = Dist(rank=0, world=2, device=torch.device("cuda", 0), sync_bn=False)
    assert type(off.sync_batchnorm(net())[1]) is nn.BatchNorm2d
    cpu = Dist(rank=0, world=2)  # auto on a CPU: SyncBatchNorm is CUDA-only, so per rank
    assert type(cpu.sync_batchnorm(net())[1]) is nn.BatchNorm2d
    with pytest.raises(FitnetsError, match="dist.sync_bn=true needs GPUs"):
        Dist(rank=0, world=2, sync_bn=True).sync_batchnorm(net())
    assert Dist(sync_bn=True).sync_batchnorm(m) is m  # one process: nothing to synchronise


@pytest.mark.slow
@needs_gloo
def test_two_processes_on_the_streaming_path_match_one_process(tmp_path):
    """Streamed image folder: each rank reads only its rows of every global batch (random
    crops and flips seeded per epoch and image), and the result is the 1-process run's."""
    from conftest import photos

    p = photos(tmp_path / "photos", gray=True, ext="png")
    args = [*ARGS[:3], "data.name=folder", f"data.path={p}", f"data.root={tmp_path}",
            "data.image_size=28", "data.channels=gray", "data.mode=stream", "data.workers=1",
            "data.val_size=12", "data.batch_size=16", "train.optim.name=sgd",
            "train.optim.lr=0.02", "student.init=torch", "method=backprop", "train.epochs=2",
            "data.random_crop=true", "data.augment_flip=true"]
    one = tmp_path / "one"
    run(make_config(None, args), "distill", one, verbose=False)
    done = torchrun(args, tmp_path / "two")
    assert ran_to_end(done, tmp_path / "two"), done.stderr[-3000:]
    assert "stream mode (data.mode); 1 loader workers" in done.stdout
    assert_close_runs(one, tmp_path / "two", WEIGHT_ATOL)


def test_a_torchrun_worker_leaves_without_the_interpreters_finalisation(tmp_path):
    # fitnets.distributed.leave: once this process started a process group, the program
    # ends by os._exit with its code, after flushing what it printed; atexit handlers (and
    # so the finalisation where gloo's threads abort the process) never run
    script = ("import atexit, sys\n"
              "from fitnets import distributed\n"
              "atexit.register(lambda: print('finalised'))\n"
              "print('trained', end='')\n"
              "sys.stderr.write('warned')\n"
              "distributed.leave(3)  # nothing started yet: returns\n"
              "distributed._STARTED_GROUP = True\n"
              "distributed.leave(5)\n"
              "print('not reached')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (5, "trained", "warned")


def test_the_program_keeps_its_exit_codes(tmp_path, monkeypatch, capsys):
    # entry() is what `fitnets` and `python -m fitnets` run: usage errors 2, --help 0; one
    # real process shows the code reaches the shell, the others call entry() here
    from fitnets.cli import entry

    for argv, code, err in ((["--help"], 0, ""), (["no-such-command"], 2, "invalid choice")):
        monkeypatch.setattr(sys, "argv", ["fitnets", *argv])
        with pytest.raises(SystemExit) as e:
            entry()
        assert e.value.code == code and err in capsys.readouterr().err
    missing = subprocess.run([sys.executable, "-m", "fitnets", "distill", "no-such-recipe"],
                             capture_output=True, text=True, cwd=tmp_path)
    assert missing.returncode == 2 and "fitnets: error:" in missing.stderr


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="reads /proc; PR_SET_PDEATHSIG is Linux's")


@pytest.mark.slow
@needs_gloo
@linux_only
def test_workers_die_with_their_torchrun_agent_and_the_run_resumes_exactly(setup, tmp_path):
    base, args, _, two, _ = setup
    out = tmp_path / "orphaned"
    cmd, env = torchrun_command(args, out)
    # rank 0 freezes itself (SIGSTOP) after its 1st checkpoint, so the run cannot finish
    # before the kill; rank 1 then waits for it in a collective, as idle workers did
    env["FITNETS_TEST_KILL_AT"] = "save:1:STOP"
    log = tmp_path / "torchrun.log"
    with open(log, "w") as f:  # in a process group of its own, as a shell job would be
        agent = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 180
        while not (len(workers) == 2 and any(procs.state(w) == "T" for w in workers)):
            assert agent.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
            workers = procs.workers(agent.pid)
        # torchrun started each worker in a session of its own: this does not reach them
        os.killpg(agent.pid, signal.SIGKILL)
        agent.wait()
        left, waited = procs.wait_gone(workers, 10.0)
    finally:
        if agent.poll() is None:
            os.killpg(agent.pid, signal.SIGKILL)
            agent.wait()
        procs.kill_leftovers(workers)
    assert left == [], f"workers {left} outlived their agent by 10 s"
    print(f"workers gone {waited:.3f} s after their agent")
    assert not (out / "summary.json").exists()
    assert [p.name for p in (out / "checkpoints").glob("ckpt-*.pt")] == ["ckpt-000001.pt"]
    # both ranks died at once, one of them frozen: the resumed run is the uninterrupted one
    done = torchrun(args, out, resume=True)
    assert ran_to_end(done, out), done.stderr[-3000:]
    assert_close_runs(two, out, atol=0.0)


@linux_only
def test_an_orphaned_worker_ends_itself_without_the_kernels_signal(tmp_path):
    # the portable half of watch_agent: a thread that sees the parent change (no prctl)
    watcher = ("import os, time\n"
               "from fitnets.distributed import watch_agent\n"
               "assert watch_agent(deathsig=False, period=0.2)\n"
               "assert not watch_agent()  # once per process\n"
               "print(os.getpid(), flush=True)\n"
               "time.sleep(60)\n"
               "print('outlived its parent', flush=True)\n")
    parent = ("import subprocess, sys, time\n"
              f"subprocess.Popen([sys.executable, '-c', {watcher!r}])\n"
              "time.sleep(120)\n")
    env = {**os.environ, "PYTHONPATH": str(Path(fitnets.__file__).parents[1])}
    err = tmp_path / "stderr"
    with open(err, "w") as f:
        mid = subprocess.Popen([sys.executable, "-c", parent], env=env, stdout=subprocess.PIPE,
                               stderr=f, text=True)
    child = None
    try:
        child = int(mid.stdout.readline())
        mid.kill()
        mid.wait()
        left, waited = procs.wait_gone([child], 10.0)
    finally:
        if mid.poll() is None:
            mid.kill()
            mid.wait()
        procs.kill_leftovers([child] if child else [])
    assert left == [] and waited < 3, waited  # a 0.2 s period
    assert f"agent (pid {mid.pid}) is gone; exiting" in err.read_text()
    assert mid.stdout.read() == ""  # it did not go on
