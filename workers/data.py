"""Datasets held in memory as tensors, and CIFAR's augmentation done on whole batches."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
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


# --- text: the Python documentation's topic texts, as bytes (the pydoc-transformer task) ---------------

PYDOC_SOURCE = "pydoc_data.topics.topics"  # CPython's standard library: the help() topics, English, no download
PYDOC_PYTHON = "3.11.7"  # the Python whose text the numbers below describe (each release regenerates it)
PYDOC_BYTES = 466_273
PYDOC_SHA256 = "71f2ff5d99bdc1f9c48c5c2353ad138201c5ca1c377e0226857ef8fa89b8bcee"
TEST_SHARE = 0.1  # the corpus's last tenth is the test text


@dataclass(frozen=True)
class Corpus:
    """A token sequence (uint8 bytes: vocabulary 256) and where it came from."""

    tokens: Tensor
    source: str
    python: str  # the Python version that supplied it
    sha256: str  # of the bytes


def _pydoc_text() -> str:
    """The topic texts joined in sorted key order, two newlines apart."""
    try:
        from pydoc_data.topics import topics
    except ImportError as exc:
        raise DatasetMissingError(
            f"task pydoc-transformer reads {PYDOC_SOURCE}, the Python documentation's topic texts that CPython's "
            f"standard library ships, and this Python ({platform.python_version()}) has none ({exc}); use a "
            "Python build that includes its pydoc_data package (a full CPython install does)") from None
    if not isinstance(topics, dict) or not topics or not all(isinstance(v, str) for v in topics.values()):
        raise DatasetMissingError(f"task pydoc-transformer: {PYDOC_SOURCE} in this Python "
                                  f"({platform.python_version()}) is not the dict of topic texts it expects")
    return "\n\n".join(topics[key] for key in sorted(topics))


@functools.cache
def pydoc_corpus() -> Corpus:
    """The Python documentation's topic texts (``pydoc_data.topics``) as UTF-8 bytes: deterministic for a Python
    version; Python 3.11.7's are :data:`PYDOC_BYTES` bytes with SHA-256 :data:`PYDOC_SHA256`. Another
    Python's text differs (each release regenerates it): said once in the log with its own hash, since its
    results do not compare with another version's."""
    raw = _pydoc_text().encode("utf-8")
    digest = hashlib.sha256(raw).hexdigest()
    if digest != PYDOC_SHA256:
        logging.getLogger("adamscape").warning(
            "pydoc-transformer: %s of Python %s is %d bytes with sha256 %s, not Python %s's text (%s): its results do "
            "not compare with those of another Python version", PYDOC_SOURCE, platform.python_version(), len(raw),
            digest, PYDOC_PYTHON, PYDOC_SHA256)
    tokens = torch.frombuffer(bytearray(raw), dtype=torch.uint8).clone()
    return Corpus(tokens, PYDOC_SOURCE, platform.python_version(), digest)


def token_windows(tokens: Tensor, context: int, test_tokens: int) -> tuple[Tensor, Tensor]:
    """Train and test windows (int64, ``context + 1`` tokens each: inputs and the next token at every position)
    of ``tokens``: its first nine tenths train, its last tenth tests, by position. Each part is cut into
    consecutive windows that overlap by one token (window i's last target is window i+1's first input); the
    test windows are those of the first ``test_tokens`` tokens of the test part (all of it if it is shorter)."""
    cut = len(tokens) - int(len(tokens) * TEST_SHARE)
    train, test = tokens[:cut], tokens[cut:cut + test_tokens]
    for part, what in ((train, "the training text"), (test, "the test text")):
        if len(part) < context + 1:
            raise ValueError(f"task_options: context {context} needs at least {context + 1} tokens of {what}, "
                             f"which has {len(part)}" + (" (test_tokens)" if part is test else ""))
    cut_up = lambda part: part.unfold(0, context + 1, context).long()  # noqa: E731
    return cut_up(train), cut_up(test)
