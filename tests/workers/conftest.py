"""Small files in the real dataset formats, for the tasks that read torchvision datasets."""

from __future__ import annotations

import pickle
import struct

import numpy as np
import pytest
import torchvision

IMAGES = 16  # per split: enough for two batches of 8


def _cifar(root, folder, train_files, test_file, meta_file, meta_key, label_key, classes, rng):
    (root / folder).mkdir(parents=True)
    written = {}
    for name in [*train_files, test_file]:
        pixels = rng.integers(0, 256, (IMAGES, 3 * 32 * 32), dtype=np.uint8)  # rows hold R, G, B planes
        labels = rng.integers(0, classes, IMAGES).tolist()
        (root / folder / name).write_bytes(pickle.dumps({"data": pixels, label_key: labels}))
        written[name] = (pixels, labels)
    (root / folder / meta_file).write_bytes(pickle.dumps({meta_key: [f"class{i}" for i in range(classes)]}))
    return written


def _idx(path, array: np.ndarray):
    """The MNIST idx format: magic (0x08 = uint8, ndim), big-endian dims, then the bytes."""
    path.write_bytes(struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
                     + array.astype(np.uint8).tobytes())


def _mnist(root, folder, rng):
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    for split in ("train", "t10k"):
        _idx(raw / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (IMAGES, 28, 28)))
        _idx(raw / f"{split}-labels-idx1-ubyte", rng.integers(0, 10, IMAGES))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    rng = np.random.default_rng(0)
    batches = [f"data_batch_{i}" for i in range(1, 6)]
    written = _cifar(root, "cifar-10-batches-py", batches, "test_batch", "batches.meta", "label_names", "labels",
                     10, rng)
    _cifar(root, "cifar-100-python", ["train"], "test", "meta", "fine_label_names", "fine_labels", 100, rng)
    for folder in ("MNIST", "FashionMNIST"):
        _mnist(root, folder, rng)
    return root, written


@pytest.fixture(autouse=True)
def _small_files_pass_the_checksum(monkeypatch):
    """torchvision's CIFAR classes compare each file's MD5 with the real dataset's; ours are small stand-ins.
    Only the checksum is bypassed: the classes still read and decode the files."""
    monkeypatch.setattr(torchvision.datasets.utils, "check_md5", lambda *args, **kwargs: True)


