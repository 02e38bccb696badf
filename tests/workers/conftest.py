"""Small files in the real dataset formats, for the tasks that read torchvision datasets."""

from __future__ import annotations

import pickle
import struct

import numpy as np
import pytest
import torchvision

IMAGES = 16  # per split: enough for two batches of 8


def _cifar(root, folder, train_files, test_file, meta_file, meta_key, label_key, classes, rng, images=IMAGES):
    (root / folder).mkdir(parents=True)
    written = {}
    for name in [*train_files, test_file]:
        pixels = rng.integers(0, 256, (images, 3 * 32 * 32), dtype=np.uint8)  # rows hold R, G, B planes
        labels = rng.integers(0, classes, images).tolist()
        (root / folder / name).write_bytes(pickle.dumps({"data": pixels, label_key: labels}))
        written[name] = (pixels, labels)
    (root / folder / meta_file).write_bytes(pickle.dumps({meta_key: [f"class{i}" for i in range(classes)]}))
    return written


def _idx(path, array: np.ndarray):
    """The MNIST idx format: magic (0x08 = uint8, ndim), big-endian dims, then the bytes."""
    path.write_bytes(struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
                     + array.astype(np.uint8).tobytes())


def _mnist(root, folder, rng, images=IMAGES):
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    for split in ("train", "t10k"):
        _idx(raw / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (images, 28, 28)))
        _idx(raw / f"{split}-labels-idx1-ubyte", rng.integers(0, 10, images))


def _datasets(root, images: int):
    """CIFAR-10 (five train files), CIFAR-100, MNIST and Fashion-MNIST with ``images`` per file."""
    rng = np.random.default_rng(0)
    batches = [f"data_batch_{i}" for i in range(1, 6)]
    written = _cifar(root, "cifar-10-batches-py", batches, "test_batch", "batches.meta", "label_names", "labels",
                     10, rng, images)
    _cifar(root, "cifar-100-python", ["train"], "test", "meta", "fine_label_names", "fine_labels", 100, rng, images)
    for folder in ("MNIST", "FashionMNIST"):
        _mnist(root, folder, rng, images)
    return root, written


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return _datasets(tmp_path_factory.mktemp("datasets"), IMAGES)


FEW = 2  # per split in ``few_images``: a CIFAR-10 epoch of five steps of 2, one step of 2 for the others


@pytest.fixture(scope="module")
def few_images(tmp_path_factory):
    """The same files with ``FEW`` images each: for a test that needs a task to train a few steps, not many
    (a step of the CIFAR DenseNet-121 on 8 images takes some 15 s on two CPU cores)."""
    return _datasets(tmp_path_factory.mktemp("few-images"), FEW)


@pytest.fixture(autouse=True)
def _small_files_pass_the_checksum(monkeypatch):
    """torchvision's CIFAR classes compare each file's MD5 with the real dataset's; ours are small stand-ins.
    Only the checksum is bypassed: the classes still read and decode the files."""
    monkeypatch.setattr(torchvision.datasets.utils, "check_md5", lambda *args, **kwargs: True)


