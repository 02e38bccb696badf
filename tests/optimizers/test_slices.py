"""Cache-sized slices (``optimizers/base.py``): an eager CPU kernel run slice by slice gives what it gives on the
whole lists, for every registered optimizer (those that do not slice pass trivially), and the slices cover
every element exactly once."""

from __future__ import annotations

import pytest
import torch

import optimizers
from optimizers import base, pieces

# a matrix and a kernel cut into several slices, small tensors packed, a vector cut mid-way, a transposed
# (non-contiguous) parameter kept whole
SHAPES = [(300, 7), (5,), (64, 3, 3, 3), (1,), (2000,), (3, 4, 2), (130, 40)]


def _params(seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=gen, dtype=torch.float64) for s in SHAPES]
    params[-1] = torch.randn(40, 130, generator=gen, dtype=torch.float64).t()  # non-contiguous
    return [p.requires_grad_(True) for p in params]


SLICING = {"adam", "adamw", "amsgrad", "adamax", "nadam", "radam", "adabelief", "adabound", "amsbound", "adamod",
           "sgdm", "adagrad", "rmsprop", "adamw-schedulefree", "adopt", "ademamix", "lion"}


def _run(name: str, sliced: bool, monkeypatch) -> tuple[list[torch.Tensor], list[dict]]:
    cuts = []
    with monkeypatch.context() as patch:
        if sliced:
            patch.setattr(pieces, "SLICE_BYTES", 1024)  # 128 float64 per slice and list
            original = pieces.cache_sized_slices

            def counted(lists, slice_bytes=None):
                cuts.append(len(result := original(lists, slice_bytes)))
                return result

            patch.setattr(pieces, "cache_sized_slices", counted)
            patch.setattr(base, "cache_sized_slices", counted)
        else:
            patch.setattr(pieces, "slices_pay", lambda params, group: False)
            patch.setattr(base, "slices_pay", lambda params, group: False)
        params = _params()
        optimizer = optimizers.create(name, params)
        base.train_mode(optimizer)
        for step in range(12):
            gen = torch.Generator().manual_seed(100 + step)
            for p in params:
                grad = torch.randn(p.shape, generator=gen, dtype=torch.float64)
                p.grad = grad if step % 3 else grad.t().contiguous().t() if grad.dim() == 2 else grad
            optimizer.step()
        if sliced:
            assert (min(cuts, default=0) > 20) == (name in SLICING), cuts
        return [p.detach().clone() for p in params], [dict(s) for s in optimizer.state.values()]


@pytest.mark.parametrize("name", optimizers.names())
def test_slice_by_slice_equals_whole_lists(name, monkeypatch):
    whole, whole_state = _run(name, False, monkeypatch)
    sliced, sliced_state = _run(name, True, monkeypatch)
    assert any((p - q).abs().max() > 1e-3 for p, q in zip(whole, _params()))  # they moved
    for a, b in zip(sliced, whole):
        assert torch.equal(a, b)
    for mine, theirs in zip(sliced_state, whole_state):
        for key, value in theirs.items():
            assert torch.equal(torch.as_tensor(mine[key]), torch.as_tensor(value)), key


def test_the_slices_cover_each_element_once_and_write_through():
    tensors = [torch.zeros(s) for s in [(1000,), (3,), (50, 50), (7,), (4096,), (2, 3)]]
    tensors.append(torch.zeros(30, 20).t())  # non-contiguous: kept whole
    cuts = pieces.cache_sized_slices([tensors, [t.clone() for t in tensors]], slice_bytes=1024)
    for first, second in cuts:
        assert [t.shape for t in first] == [t.shape for t in second]
        if all(t.is_contiguous() for t in first):
            assert sum(t.numel() for t in first) <= 256  # 1024 bytes of float32
        for t in first:
            t.add_(1)
    assert all(torch.equal(t, torch.ones_like(t)) for t in tensors)  # views write through, each element once
    assert len(cuts) > 10


def test_populations_and_small_lists_take_the_whole_lists():
    params = [torch.zeros(1_000_000)]
    assert pieces.slices_pay(params, {"lr": 1e-3})
    assert not pieces.slices_pay(params, {"lr": torch.tensor([1e-3, 1e-2])})
    assert not pieces.slices_pay(params, {"lr": 1e-3, "population": True})
    assert not pieces.slices_pay([torch.zeros(100)], {"lr": 1e-3})
    small = [torch.zeros(100)]
    (whole,) = pieces.in_slices([small], {"lr": 1e-3})
    assert whole[0] is small

