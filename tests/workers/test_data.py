"""The generated datasets and their on-disk cache."""

from __future__ import annotations

import torch

from workers import data


def _equal(a: data.Split, b: data.Split) -> bool:
    return all(torch.equal(x, y) for x, y in zip((a.train_x, a.train_y, a.test_x, a.test_y),
                                                 (b.train_x, b.train_y, b.test_x, b.test_y)))


def test_the_cached_digits_split_is_the_one_scikit_learn_gives_and_a_broken_file_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAMSCAPE_CACHE", str(tmp_path))
    fresh = data._digits()
    assert len(fresh.train_y) + len(fresh.test_y) == 1797 and fresh.train_x.shape[1] == 64
    first = data._cached("digits", "scikit-learn", data._digits)  # builds and writes
    (written,) = tmp_path.iterdir()
    again = data._cached("digits", "scikit-learn", lambda: (_ for _ in ()).throw(AssertionError("rebuilt")))
    assert _equal(first, fresh) and _equal(again, fresh)  # the second read came from the file
    written.write_bytes(b"not a tensor file")
    assert _equal(data._cached("digits", "scikit-learn", data._digits), fresh)
    assert _equal(data._cached("digits", "scikit-learn", lambda: (_ for _ in ()).throw(AssertionError)), fresh)


def test_an_unwritable_cache_costs_only_time(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("ADAMSCAPE_CACHE", str(blocker / "below-a-file"))
    assert _equal(data._cached("digits", "scikit-learn", data._digits), data._digits())


def test_an_augmented_batch_reaches_its_device_in_one_copy_with_cached_constants():
    """On another device (``meta`` here, as CUDA would), a CIFAR batch's crop and flip draws cross as one
    copy, and the normalisation constants are made there once: no per-batch host→device traffic beyond it."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from workers.data import CIFAR10, _normalisation

    class Crossings(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.copies = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            inputs = [a for a in args if isinstance(a, torch.Tensor)]
            if isinstance(out, torch.Tensor) and any(a.device != out.device for a in inputs):
                self.copies += 1
            return out

    images = torch.zeros((8, 3, 32, 32), dtype=torch.uint8, device="meta")
    generator = torch.Generator().manual_seed(0)
    CIFAR10(images, generator)  # the first batch makes the constants
    hits = _normalisation.cache_info().hits
    with Crossings() as crossings:
        out = CIFAR10(images, generator)
    assert crossings.copies == 1 and out.device.type == "meta" and out.shape == images.shape
    assert _normalisation.cache_info().hits == hits + 1
