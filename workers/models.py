"""The networks the tasks train (architectures as in the papers and DeepOBS)."""

from __future__ import annotations

from torch import nn


def mlp(*widths: int) -> nn.Module:
    """Flatten, then Linear-ReLU layers through ``widths`` (no ReLU after the last)."""
    layers: list[nn.Module] = [nn.Flatten()]
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def mnist1d_cnn() -> nn.Module:
    """The MNIST-1D paper's CNN: three strided 1-D convolutions (25 channels), then a linear layer."""
    return nn.Sequential(
        nn.Unflatten(1, (1, 40)),
        nn.Conv1d(1, 25, 5, stride=2, padding=1), nn.ReLU(),   # 40 -> 19
        nn.Conv1d(25, 25, 3, stride=2, padding=1), nn.ReLU(),  # 19 -> 10
        nn.Conv1d(25, 25, 3, stride=2, padding=1), nn.ReLU(),  # 10 -> 5
        nn.Flatten(), nn.Linear(125, 10))


def deepobs_2c2d() -> nn.Module:
    """DeepOBS fmnist_2c2d: 5x5 conv 32 + max-pool, 5x5 conv 64 + max-pool, fc 1024, fc 10 (28x28 inputs)."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2, 2),
        nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2, 2),
        nn.Flatten(), nn.Linear(7 * 7 * 64, 1024), nn.ReLU(), nn.Linear(1024, 10))


def deepobs_3c3d(classes: int = 10) -> nn.Module:
    """DeepOBS cifar10_3c3d: conv 64 (5x5 valid), conv 96 (3x3 valid), conv 128 (3x3 same), each + 3x3/2
    max-pool; fc 512, fc 256, fc classes (32x32 inputs)."""
    pool = lambda: nn.MaxPool2d(3, 2, padding=1)  # noqa: E731  (TensorFlow "same" sizes: 28->14, 12->6, 6->3)
    return nn.Sequential(
        nn.Conv2d(3, 64, 5), nn.ReLU(), pool(),
        nn.Conv2d(64, 96, 3), nn.ReLU(), pool(),
        nn.Conv2d(96, 128, 3, padding=1), nn.ReLU(), pool(),
        nn.Flatten(), nn.Linear(128 * 3 * 3, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
        nn.Linear(256, classes))


def cifar_resnet34(classes: int) -> nn.Module:
    """torchvision's ResNet-34 with the CIFAR stem of the AdaBound demo: 3x3 stride-1 conv, no max-pool."""
    import torchvision  # imported here: it costs seconds (torch._dynamo) that the small tasks never need

    model = torchvision.models.resnet34(num_classes=classes)
    model.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def cifar_densenet121(classes: int) -> nn.Module:
    """torchvision's DenseNet-121 (growth 32, blocks 6-12-24-16) with a CIFAR stem: 3x3 conv, no max-pool."""
    import torchvision

    model = torchvision.models.densenet121(num_classes=classes)
    model.features.conv0 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
    model.features.pool0 = nn.Identity()
    return model
