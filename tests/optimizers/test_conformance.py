"""The contract every optimizer keeps, run table-driven over the whole registry and over optimizers a
study file names as its own (a plugin is checked with the same tests the registry passes).

An optimizer with a mode (``train()`` / ``eval()``: Schedule-Free) is built as adamscape builds it, put
in train mode (``optimizers.base.train_mode``), and is checked in both modes as well: the switches move
the parameters between its two points and back, are no-ops in the mode they name, survive a state_dict,
and act on a population's rows as on K separate optimizers.
"""

from __future__ import annotations

import copy
import inspect
from pathlib import Path

import pytest
import torch

import optimizers
from optimizers.base import evaluating, has_mode, train_mode
from study import plugins

ROOT = Path(__file__).resolve().parents[2]
REGISTERED = optimizers.names()
# own optimizers as a study file names them: a file beside it, and an installed module's class
OWN = ["./examples/plugins/lion.py:Lion", "torch.optim:Adam", "torch.optim:SGD"]
for _reference in OWN:
    optimizers.register(plugins.optimizer_spec(plugins.describe_optimizer(plugins.locate(_reference, "optimizer",
                                                                                          ROOT))))
# the authors' Schedule-Free AdamW as a study's own optimizer (a test extra): a class with a mode that starts in
# eval mode and refuses a step there
SCHEDULEFREE = "schedulefree:AdamWScheduleFree"
try:
    optimizers.register(plugins.optimizer_spec(plugins.describe_optimizer(plugins.locate(SCHEDULEFREE, "optimizer",
                                                                                          ROOT))))
    OWN.append(SCHEDULEFREE)
except plugins.PluginError:  # schedulefree not installed
    pass
NAMES = REGISTERED + OWN
BATCHED = [name for name in NAMES if optimizers.spec(name).batched]
SHAPES = [(6, 4), (4,), (2, 3, 2)]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _params(dtype=torch.float64, device="cpu", seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=torch.float64).to(device, dtype).requires_grad_(True) for s in SHAPES]


def _set_grads(params, step):
    """Deterministic gradients of a quadratic bowl plus a step-dependent tilt (no autograd needed).

    The tilt has the shape of ``SHAPES[i]``; a batched parameter of shape (K, *SHAPES[i])
    gets the same gradient in each of its K slices as an unbatched run would.
    """
    for i, p in enumerate(params):
        shape = torch.Size(SHAPES[i])
        tilt = torch.cos(torch.arange(shape.numel(), dtype=torch.float64) * (step + 1) + i).reshape(shape)
        p.grad = (2 * p.detach().double() + 0.3 * tilt.to(p.device)).to(p.dtype)


def _train(optimizer, params, steps, first_step=0):
    for step in range(first_step, first_step + steps):
        _set_grads(params, step)
        optimizer.step()


def _snapshot(params):
    return [p.detach().clone() for p in params]


def _create(name, params, **hparams):
    """Every optimizer with a learning rate that moves it visibly in a few steps, weight decay off; one with a
    mode in train mode, as adamscape's loops put it."""
    decay = {"weight_decay": 0.0} if "weight_decay" in optimizers.spec(name).hparams else {}
    optimizer = optimizers.create(name, params, **{"lr": 1e-2, **decay, **hparams})
    train_mode(optimizer)
    return optimizer


WITH_MODE = [name for name in NAMES if has_mode(optimizers.spec(name).cls)]  # the class has train() and eval()


@pytest.mark.parametrize("name", REGISTERED)
def test_a_registered_optimizer_is_described_from_its_class_like_any_other(name):
    spec = optimizers.spec(name)
    described = optimizers.describe(spec.cls, name, spec.target)
    assert (described.hparams, described.packed, described.batched) == (spec.hparams, {}, True)


@pytest.mark.parametrize("name", REGISTERED)
def test_registry_defaults_are_the_class_defaults_and_valid(name):
    spec = optimizers.spec(name)
    signature = inspect.signature(spec.cls)
    for key, hp in spec.hparams.items():
        assert signature.parameters[key].default == hp.default, key
        assert hp.check(hp.default) is None, key
        low, high = hp.search
        assert hp.check(low) is None and hp.check(high) is None and low < high, key
    with pytest.raises(ValueError, match="no hyperparameter bogus"):
        optimizers.create(name, _params(), bogus=1.0)


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_continues_identically(name):
    params = _params()
    optimizer = _create(name, params)
    _train(optimizer, params, 7)
    saved = copy.deepcopy(optimizer.state_dict())
    twin = [p.detach().clone().requires_grad_(True) for p in params]
    restored = _create(name, twin, lr=0.5)  # the hyperparameters must come from the state dict
    restored.load_state_dict(saved)
    _train(optimizer, params, 9, first_step=7)
    _train(restored, twin, 9, first_step=7)
    for a, b in zip(params, twin):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", NAMES)
def test_a_scheduler_drives_the_learning_rate(name):
    params = _params()
    optimizer = _create(name, params, **({"weight_decay": 1e-2} if "weight_decay" in optimizers.spec(name).hparams
                                         else {}))
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[5], gamma=0.0)
    for step in range(5):
        _set_grads(params, step)
        optimizer.step()
        scheduler.step()
    frozen = _snapshot(params)
    if has_mode(optimizer):
        # Schedule-Free: lr 0 stops z, while the average x (and so y) goes on moving towards it; what stops is
        # every effect of the gradients: other gradients give the same parameters
        twin = copy.deepcopy((optimizer, params))
        _train(optimizer, params, 5, first_step=5)
        other, other_params = twin
        _train(other, other_params, 5, first_step=50)
        assert all(torch.equal(a, b) for a, b in zip(params, other_params)), "lr scheduled to 0: gradients must not matter"
    else:
        _train(optimizer, params, 5, first_step=5)
        assert all(torch.equal(a, b) for a, b in zip(frozen, params)), "lr scheduled to 0 must stop every update"
    moved = (frozen[0] - _params()[0]).abs().max().item()
    assert moved > 1e-3


@pytest.mark.parametrize("name", NAMES)
def test_add_param_group_behaves_like_a_fresh_optimizer(name):
    early, late = _params(seed=1), _params(seed=2)
    optimizer = _create(name, early)
    _train(optimizer, early, 4)
    optimizer.add_param_group({"params": late, "lr": 3e-2})
    alone = [p.detach().clone().requires_grad_(True) for p in late]
    reference = _create(name, alone, lr=3e-2)
    for step in range(6):
        for group in (early, late, alone):
            _set_grads(group, step)
        optimizer.step()
        reference.step()
    for a, b in zip(late, alone):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.xfail(
    strict=True, reason="the authors' class counts steps per group: a parameter that joins late joins the group's "
                        "average (adamw-schedulefree counts per parameter, as every adamscape optimizer)"))
    if name == SCHEDULEFREE else name for name in NAMES])
def test_none_gradients_leave_a_parameter_alone_until_it_has_one(name):
    params = _params()
    optimizer = _create(name, params)
    idle = params[1].detach().clone()
    for step in range(3):
        _set_grads(params, step)
        params[1].grad = None
        optimizer.step()
    assert torch.equal(params[1], idle) and params[1] not in optimizer.state
    alone = [params[1].detach().clone().requires_grad_(True)]
    reference = _create(name, alone)
    for step in range(3, 8):
        _set_grads(params, step)
        alone[0].grad = params[1].grad.clone()
        optimizer.step()
        reference.step()
    torch.testing.assert_close(params[1], alone[0], rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_zero_gradients_do_not_move_the_parameters(name):
    params = _params()
    optimizer = _create(name, params)
    start = _snapshot(params)
    for _ in range(5):
        for p in params:
            p.grad = torch.zeros_like(p)
        optimizer.step()
    for a, b in zip(start, params):
        assert torch.equal(a, b)
    for state in optimizer.state.values():
        assert all(torch.isfinite(v).all() for v in state.values() if isinstance(v, torch.Tensor))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 1e-4), (torch.bfloat16, 1e-1)])
@pytest.mark.parametrize("name", NAMES)
def test_low_precision_tracks_float64(name, dtype, tolerance, device):
    exact, low = _params(), _params(dtype, device)
    exact_opt, low_opt = _create(name, exact), _create(name, low)
    _train(exact_opt, exact, 20)
    _train(low_opt, low, 20)
    for state in low_opt.state.values():
        # per-parameter buffers follow the parameter (a step counter may be a 0-d float32 tensor, as torch's)
        assert all(v.dtype == dtype and v.device.type == device for v in state.values()
                   if isinstance(v, torch.Tensor) and v.dim() > 0)
    for a, b in zip(exact, low):
        assert torch.isfinite(b).all()
        torch.testing.assert_close(b.double().cpu(), a.detach(), rtol=tolerance, atol=tolerance)


def _configs(name, count=3):
    """``count`` configurations spread over each hyperparameter's search range."""
    spec = optimizers.spec(name)
    configs = [spec.defaults() for _ in range(count)]
    for key, hp in spec.hparams.items():
        low, high = hp.search
        for k, config in enumerate(configs[1:], start=1):
            t = k / (count - 1)
            config[key] = low * (high / low) ** t if hp.log and low > 0 else low + (high - low) * t
    return configs


@pytest.mark.parametrize("name", BATCHED)
def test_batched_configs_equal_separate_runs(name):
    configs = _configs(name)
    separate = []
    for config in configs:
        params = _params()
        _train(optimizers.create(name, params, **config), params, 30)
        separate.append(params)
    stacked = [torch.stack([p.detach()] * len(configs)).requires_grad_(True) for p in _params()]
    hparams = {key: torch.tensor([c[key] for c in configs], dtype=torch.float64) for key in configs[0]}
    _train(optimizers.create(name, stacked, **hparams), stacked, 30)
    for k, params in enumerate(separate):
        for batched, single in zip(stacked, params):
            torch.testing.assert_close(batched[k], single.detach(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", [name for name in WITH_MODE if optimizers.spec(name).batched])
def test_a_populations_eval_and_train_points_equal_separate_optimizers(name):
    """The mode switches of a population act on each config's rows as K separate optimizers' switches."""
    configs = _configs(name)
    separate = []
    for config in configs:
        params = _params()
        optimizer = optimizers.create(name, params, **config)
        train_mode(optimizer)
        _train(optimizer, params, 30)
        separate.append((optimizer, params))
    stacked = [torch.stack([p.detach()] * len(configs)).requires_grad_(True) for p in _params()]
    hparams = {key: torch.tensor([c[key] for c in configs], dtype=torch.float64) for key in configs[0]}
    population = optimizers.create(name, stacked, **hparams)
    train_mode(population)
    _train(population, stacked, 30)
    for switch in ("eval", "train"):
        getattr(population, switch)()
        for k, (optimizer, params) in enumerate(separate):
            getattr(optimizer, switch)()
            for batched, single in zip(stacked, params):
                torch.testing.assert_close(batched[k], single.detach(), rtol=1e-10, atol=1e-12, msg=switch)
    assert max((a - b).abs().max().item() for a, b in zip(separate[0][1], _params())) > 1e-3


@pytest.mark.parametrize("name", WITH_MODE)
def test_eval_and_train_move_between_two_points_and_are_no_ops_in_their_own_mode(name):
    params = _params()
    optimizer = _create(name, params)
    before = _snapshot(params)
    optimizer.eval()  # no step yet: the two points are one
    optimizer.train()
    assert all(torch.equal(a, b) for a, b in zip(before, params))
    _train(optimizer, params, 7)
    training = _snapshot(params)
    optimizer.train()  # already training
    assert all(torch.equal(a, b) for a, b in zip(training, params))
    optimizer.eval()
    evaluated = _snapshot(params)
    assert max((a - b).abs().max().item() for a, b in zip(training, evaluated)) > 1e-6, "eval() must move to x"
    optimizer.eval()  # already evaluating
    assert all(torch.equal(a, b) for a, b in zip(evaluated, params))
    optimizer.train()
    for a, b in zip(training, params):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)  # back, up to rounding


@pytest.mark.parametrize("name", WITH_MODE)
def test_the_evaluation_hook_evaluates_at_the_eval_point_and_trains_on_after(name):
    """``optimizers.base.evaluating``: what adamscape's loops wrap each evaluation in — eval() before,
    train() after, also when the evaluation raises; training then continues as without the round trip."""
    params, plain = _params(), _params()
    optimizer, reference = _create(name, params), _create(name, plain)
    _train(optimizer, params, 7)
    _train(reference, plain, 7)
    reference.eval()
    expected = _snapshot(plain)
    reference.train()
    with evaluating(optimizer):
        seen = _snapshot(params)
    assert all(torch.equal(a, b) for a, b in zip(seen, expected))
    with pytest.raises(ZeroDivisionError), evaluating(optimizer):
        1 / 0
    _train(optimizer, params, 5, first_step=7)  # in train mode again: a step is allowed
    _train(reference, plain, 5, first_step=7)
    for a, b in zip(params, plain):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    with evaluating(torch.optim.SGD(_params(), lr=0.1)):  # an optimizer without a mode: nothing happens
        pass


@pytest.mark.parametrize("name", WITH_MODE)
def test_a_state_saved_in_eval_mode_continues_identically(name):
    params = _params()
    optimizer = _create(name, params)
    _train(optimizer, params, 7)
    optimizer.eval()
    saved = copy.deepcopy(optimizer.state_dict())
    twin = [p.detach().clone().requires_grad_(True) for p in params]
    restored = _create(name, twin, lr=0.5)
    restored.load_state_dict(saved)
    for opt in (optimizer, restored):
        opt.train()
    _train(optimizer, params, 9, first_step=7)
    _train(restored, twin, 9, first_step=7)
    for a, b in zip(params, twin):
        assert torch.equal(a, b)


# Compiling takes seconds per optimizer; these cover list clamps, a float64 product, a select, and a buffer
# that exists only for some hyperparameter values.
@pytest.mark.parametrize("name", ["adabound", "nadam", "radam", "rmsprop"])
def test_compiled_kernel_matches_eager(name):
    eager, fused = _params(torch.float32), _params(torch.float32)
    optimizers_ = [_create(name, eager), _create(name, fused).compile()]
    schedules = [torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5) for o in optimizers_]
    for step in range(8):
        for params, optimizer, schedule in zip((eager, fused), optimizers_, schedules):
            _set_grads(params, step)
            optimizer.step()
            schedule.step()
    for a, b in zip(eager, fused):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    assert (eager[0] - _params(torch.float32)[0]).abs().max() > 1e-3


@pytest.mark.parametrize("name", BATCHED)
def test_population_hyperparameters_follow_their_parameters_device(name):
    """(K,) hyperparameter tensors made on the CPU drive parameters on another device (``meta`` here, as
    CUDA would): nothing mixes devices, and the step leaves every parameter on its own device."""
    configs = _configs(name)
    stacked = [torch.zeros((len(configs), *s), dtype=torch.float32, device="meta").requires_grad_(True)
               for s in SHAPES]
    hparams = {key: torch.tensor([c[key] for c in configs], dtype=torch.float64) for key in configs[0]}
    optimizer = optimizers.create(name, stacked, **hparams)
    for _ in range(2):
        for p in stacked:
            p.grad = torch.zeros_like(p)
        optimizer.step()
    assert all(p.device.type == "meta" for p in stacked)
    assert all(t.device.type == "meta" for state in optimizer.state.values() for t in state.values()
               if isinstance(t, torch.Tensor) and t.dim() > 0)


def test_the_compiled_path_keeps_its_hyperparameter_tensors_and_refills_them_in_place():
    """The kernel behind compile() gets the same 0-d tensors every step (no new device tensor, no copy per
    step); a scheduler's new lr is written into them."""
    params = _params(torch.float32)
    optimizer = _create("adam", params).compile()
    seen = []

    def kernel(params, grads, buffers, step, group):  # stands in for the compiled kernel: records its inputs
        seen.append({k: v for k, v in group.items() if isinstance(v, torch.Tensor)})
        optimizers.REGISTRY["adam"].cls.kernel(params, grads, buffers, step, group)

    optimizer._compiled = kernel
    _train(optimizer, params, 2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    scheduler.step()
    _train(optimizer, params, 1, first_step=2)
    assert all(seen[2][k] is v for k, v in seen[0].items())  # (the scheduler adds initial_lr)
    assert seen[2]["lr"].item() == pytest.approx(0.005) and seen[2]["lr"].dtype == torch.float32
