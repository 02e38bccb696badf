"""Datasets held in memory as tensors, and CIFAR's augmentation done on whole batches."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from torch import Tensor


class DatasetMissingError(RuntimeError):
    """The dataset is not under data_dir and downloading is off."""


@dataclass(frozen=True)
class Split:
    """Train and test arrays; images stay uint8 until a batch is drawn (a quarter of the memory)."""

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor

    def to(self, device: torch.device | str) -> Split:
        return Split(*(t.to(device) for t in (self.train_x, self.train_y, self.test_x, self.test_y)))


def _split(train_x, train_y, test_x, test_y, x_dtype=torch.float32) -> Split:
    as_x = lambda a: torch.as_tensor(np.asarray(a), dtype=x_dtype)  # noqa: E731
    as_y = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.long)  # noqa: E731
    return Split(as_x(train_x), as_y(train_y), as_x(test_x), as_y(test_y))


def cache_dir() -> Path:
    """Where generated splits are kept between processes: ``ADAMSCAPE_CACHE``, else ~/.cache/adamscape."""
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "adamscape"
    return Path(os.environ.get("ADAMSCAPE_CACHE") or default)


def _cached(name: str, package: str, build: Callable[[], Split]) -> Split:
    """``build()``, kept on disk under the generating package's version: a fresh worker process reads
    the file (milliseconds) instead of importing scikit-learn or regenerating MNIST-1D (seconds).
    An unreadable file is rebuilt; an unwritable cache only costs the time."""
    path = cache_dir() / f"{name}-{package}-{version(package)}.pt"
    try:
        return Split(*torch.load(path, weights_only=True))
    except Exception:  # absent, partial or from another torch: build it again
        pass
    split = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        torch.save((split.train_x, split.train_y, split.test_x, split.test_y), partial)
        os.replace(partial, path)  # atomic: a concurrent reader sees the old state or the whole file
    except OSError:
        pass
    return split


@functools.cache
def digits() -> Split:
    """scikit-learn's bundled digits: a fixed stratified 75/25 split, features scaled to [0, 1]."""
    return _cached("digits", "scikit-learn", _digits)


def _digits() -> Split:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    train_x, test_x, train_y, test_y = train_test_split(x / 16.0, y, test_size=0.25, stratify=y, random_state=0)
    return _split(train_x, train_y, test_x, test_y)


@functools.cache
def mnist1d() -> Split:
    """MNIST-1D from the package's own generator with its default arguments (seed 42): 4000 train, 1000 test."""
    return _cached("mnist1d", "mnist1d", _mnist1d)


def _mnist1d() -> Split:
    from mnist1d.data import get_dataset_args, make_dataset

    state = np.random.get_state()  # the generator reseeds numpy's global RNG; leave it as it was
    try:
        data = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(state)
    return _split(data["x"], data["y"], data["x_test"], data["y_test"])


@functools.cache
def torchvision_images(dataset: str, data_dir: str, download: bool) -> Split:
    """A torchvision dataset (CIFAR10, CIFAR100, MNIST, FashionMNIST) as uint8 NCHW tensors."""
    import torchvision

    cls = getattr(torchvision.datasets, dataset)
    try:
        train, test = (cls(data_dir, train=flag, download=download) for flag in (True, False))
    except RuntimeError as exc:
        raise DatasetMissingError(f"{dataset} not found or corrupted under data_dir {data_dir!r} ({exc}); put it "
                                  "there, point data_dir at it, or set download = true in the study file") from None
    def images(ds) -> Tensor:
        data = torch.as_tensor(np.asarray(ds.data))
        return data.permute(0, 3, 1, 2).contiguous() if data.dim() == 4 else data.unsqueeze(1)
    return _split(images(train), train.targets, images(test), test.targets, x_dtype=torch.uint8)


@dataclass(frozen=True)
class ImagePipeline:
    """uint8 images → floats in [0, 1] → optional random crop (zero padding) and flip → per-channel normalisation."""

    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    crop_padding: int = 0
    flip: bool = False

    def __call__(self, images: Tensor, generator: torch.Generator | None) -> Tensor:
        x = images.float() / 255.0
        if generator is not None:  # training batches only
            x = self._augment(x, generator)
        mean, std = _normalisation(self.mean, self.std, x.device)
        return (x - mean) / std

    def _augment(self, x: Tensor, generator: torch.Generator) -> Tensor:
        batch, _, height, width = x.shape
        pad = self.crop_padding
        # the batch's draws, made on the CPU by the seeded generator (in the order they always were: crop rows,
        # crop columns, flips), reach the device as one non-blocking copy: the CPU does not wait for the GPU
        draws = [torch.randint(0, 2 * pad + 1, (batch,), generator=generator) for _ in range(2)] if pad else []
        if self.flip:
            draws.append((torch.rand(batch, generator=generator) < 0.5).long())
        if not draws:
            return x
        together = torch.stack(draws)
        if x.device.type == "cuda":
            together = together.pin_memory()
        draws = list(together.to(x.device, non_blocking=True).unbind(0))
        if pad:  # torchvision's RandomCrop(size, padding=pad): a uniform offset per image into the padded image
            padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
            dy, dx = draws[0], draws[1]
            rows = (dy[:, None] + torch.arange(height, device=x.device))[:, None, :, None]
            cols = (dx[:, None] + torch.arange(width, device=x.device))[:, None, None, :]
            index = torch.arange(batch, device=x.device)[:, None, None, None]
            channel = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
            x = padded[index, channel, rows, cols]
        if self.flip:  # RandomHorizontalFlip(p=0.5)
            flip = draws[-1].bool()
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        return x


@functools.lru_cache(maxsize=32)
def _normalisation(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device) -> tuple[Tensor, Tensor]:
    """Per-channel normalisation constants, made on ``device`` once (not copied there every batch)."""
    shape = (1, -1, 1, 1)
    return torch.tensor(mean, device=device).view(shape), torch.tensor(std, device=device).view(shape)


UNIT = ImagePipeline()
CIFAR10 = ImagePipeline((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010), crop_padding=4, flip=True)
CIFAR100 = ImagePipeline((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), crop_padding=4, flip=True)
