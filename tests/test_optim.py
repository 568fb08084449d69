"""pylearn2's RMSProp (optim.name=rmsprop_pylearn2): by hand, its floor, resume, config."""

import copy
import math

import pytest
import torch
from torch import nn

from fitnets.config import OptimConfig, make_config
from fitnets.errors import FitnetsError
from fitnets.optim import RMSpropPylearn2, make_optimizer


def _step(opt_cls, p0, grad, **kw):
    p = torch.nn.Parameter(torch.tensor(p0))
    opt = opt_cls([p], **kw)
    p.grad = torch.tensor(grad)
    opt.step()
    return p.detach(), opt


def test_one_step_by_hand():
    # ms = 0.1 * g^2; p -= lr * g / max(sqrt(ms), 1e-5)
    p, opt = _step(RMSpropPylearn2, [1.0, -2.0], [0.5, 0.02], lr=0.01, decay=0.9)
    rms = [math.sqrt(0.1 * 0.25), math.sqrt(0.1 * 0.0004)]
    assert p.tolist() == pytest.approx([1.0 - 0.01 * 0.5 / rms[0], -2.0 - 0.01 * 0.02 / rms[1]])
    assert opt.state[opt.param_groups[0]["params"][0]]["square_avg"].tolist() == \
        pytest.approx([0.025, 0.00004])


def test_second_step_uses_the_running_mean_square():
    p = torch.nn.Parameter(torch.tensor([0.0]))
    opt = RMSpropPylearn2([p], lr=0.1, decay=0.9)
    for g in (1.0, 3.0):
        p.grad = torch.tensor([g])
        opt.step()
    ms1 = 0.1 * 1.0
    ms2 = 0.9 * ms1 + 0.1 * 9.0
    expected = -0.1 * 1.0 / math.sqrt(ms1) - 0.1 * 3.0 / math.sqrt(ms2)
    assert p.item() == pytest.approx(expected)


def test_the_floor_shrinks_steps_of_tiny_gradients_where_torch_does_not():
    g = 1e-7  # sqrt(0.1) * g = 3.2e-8 < the 1e-5 floor
    p, _ = _step(RMSpropPylearn2, [0.0], [g], lr=0.01, decay=0.9, floor=1e-5)
    assert p.item() == pytest.approx(-0.01 * g / 1e-5)  # 1e-4: the floor decides
    q, _ = _step(torch.optim.RMSprop, [0.0], [g], lr=0.01, alpha=0.9, eps=1e-8)
    assert q.item() == pytest.approx(-0.01 * g / (math.sqrt(0.1) * g + 1e-8), rel=1e-5)
    assert abs(q.item()) > 20 * abs(p.item())  # torch: ~0.03, a near-constant step
    # large gradients: the floor is inactive and both rules agree
    p, _ = _step(RMSpropPylearn2, [0.0], [0.3], lr=0.01, decay=0.9)
    q, _ = _step(torch.optim.RMSprop, [0.0], [0.3], lr=0.01, alpha=0.9, eps=1e-8)
    assert p.item() == pytest.approx(q.item(), rel=1e-6)


def test_weight_decay_adds_an_l2_gradient():
    p, _ = _step(RMSpropPylearn2, [2.0], [0.0], lr=0.1, decay=0.5, weight_decay=0.25)
    # g = 0.25 * 2 = 0.5; ms = 0.5 * 0.25; step = 0.1 * 0.5 / sqrt(0.125)
    assert p.item() == pytest.approx(2.0 - 0.1 * 0.5 / math.sqrt(0.125))


def test_state_dict_round_trip_continues_identically():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    x, y = torch.randn(8, 4), torch.randn(8, 3)

    def step(m, opt):
        opt.zero_grad()
        torch.nn.functional.mse_loss(m(x), y).backward()
        opt.step()

    opt = RMSpropPylearn2(model.parameters(), lr=0.01)
    step(model, opt)
    saved_model = {k: v.clone() for k, v in model.state_dict().items()}
    saved_opt = copy.deepcopy(opt.state_dict())  # as a checkpoint file would hold it
    step(model, opt)
    step(model, opt)
    resumed = torch.nn.Linear(4, 3)
    resumed.load_state_dict(saved_model)
    opt2 = RMSpropPylearn2(resumed.parameters(), lr=0.5)  # hyper-parameters come back too
    opt2.load_state_dict(saved_opt)
    assert opt2.param_groups[0]["lr"] == 0.01
    step(resumed, opt2)
    step(resumed, opt2)
    for a, b in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_make_optimizer_builds_it_from_the_config_with_group_scales():
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    cfg = OptimConfig(name="rmsprop_pylearn2", lr=0.005, rmsprop_decay=0.9, rmsprop_floor=1e-4)
    opt = make_optimizer([{"params": [a], "scale": 0.05}, {"params": [b]}], cfg)
    assert isinstance(opt, RMSpropPylearn2)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.005 * 0.05, 0.005])
    assert opt.param_groups[0]["floor"] == 1e-4 and opt.param_groups[0]["decay"] == 0.9
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, 0.5)  # schedules work on it
    opt.step()
    sched.step()
    assert opt.param_groups[1]["lr"] == pytest.approx(0.0025)


def test_config_rejects_momentum_and_a_bad_floor():
    with pytest.raises(FitnetsError, match="no momentum"):
        make_config(None, ["train.optim.name=rmsprop_pylearn2", "train.optim.momentum=0.5"])
    with pytest.raises(FitnetsError, match="rmsprop_floor"):
        make_config(None, ["train.optim.rmsprop_floor=0"])


def test_unknown_optimiser_and_schedule_names_are_refused_with_the_choices():
    from fitnets.optim import make_schedule

    p = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(FitnetsError, match="unknown optimiser 'lamb'; choose one of sgd, adam, "
                                           "rmsprop, rmsprop_pylearn2"):
        make_optimizer([{"params": p}], OptimConfig(name="lamb"))
    opt = make_optimizer([{"params": p}], OptimConfig(name="rmsprop"))
    assert isinstance(opt, torch.optim.RMSprop)
    with pytest.raises(FitnetsError, match="unknown lr schedule 'poly'; choose one of constant"):
        make_schedule(opt, OptimConfig(schedule="poly"), 3)


@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_pylearn2_rmsprop_foreach_makes_the_same_steps_as_the_loop(wd):
    # multi-tensor kernels: the same arithmetic as the per-parameter loop, so on the CPU
    # (where foreach runs its per-tensor fallback) the weights agree to the last bit
    torch.manual_seed(0)
    nets = [nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(64, 5)) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    opts = [RMSpropPylearn2(n.parameters(), lr=0.01, weight_decay=wd, foreach=f)
            for n, f in zip(nets, (False, True))]
    x, y = torch.randn(8, 3, 6, 6), torch.randint(0, 5, (8,))
    for _ in range(5):
        for net, opt in zip(nets, opts):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        assert torch.equal(a, b)
    assert not torch.equal(nets[0][0].weight, nn.Conv2d(3, 4, 3).weight)
    assert opts[1].state_dict()["param_groups"][0]["foreach"] is True
