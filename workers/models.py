"""The networks the tasks train (architectures as in the papers and DeepOBS)."""

from __future__ import annotations

import math
import warnings

from torch import Tensor, nn
from torch.nn import functional


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


# --- the language-model task's network (pydoc-transformer) ----------------------------------------

class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which position t sees positions ≤ t only (``scaled_dot_product_attention``
    with ``is_causal=True``); one projection makes queries, keys and values, another mixes the heads."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        batch, length, width = x.shape
        # (batch, length, 3·width) -> three (batch, heads, length, width / heads)
        q, k, v = self.qkv(x).view(batch, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        y = functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(y.transpose(1, 2).reshape(batch, length, width))


class Block(nn.Module):
    """A pre-LayerNorm transformer block: x + attention(LN(x)), then x + MLP(LN(x)) (GELU, 4× wide)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.norm1, self.attention = nn.LayerNorm(width), CausalSelfAttention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TransformerLM(nn.Module):
    """A decoder-only language model: token + learned position embeddings, ``layers`` pre-LN blocks, a final
    LayerNorm and an output head of its own (not tied to the token embedding). No dropout: its output is a
    deterministic function of its parameters (a population runs it under vmap). Logits for every position
    of ``tokens`` (batch, length ≤ context)."""

    def __init__(self, vocab: int, context: int, width: int, layers: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"task_options: width {width} must be a multiple of heads {heads} (each head takes "
                             "width / heads of it)")
        self.context = context
        self.token = nn.Embedding(vocab, width)
        self.position = nn.Embedding(context, width)
        self.blocks = nn.Sequential(*(Block(width, heads) for _ in range(layers)))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)
        # GPT-2's initialisation: N(0, 0.02) weights, zero biases, the residual branches' last projections
        # scaled by 1/√(2·layers); logits start near zero, so the loss starts near ln(vocab)
        for name, parameter in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(parameter)
            elif parameter.dim() > 1:
                residual = name.endswith(("attention.out.weight", "mlp.2.weight"))
                nn.init.normal_(parameter, 0.0, 0.02 / math.sqrt(2 * layers) if residual else 0.02)

    def forward(self, tokens: Tensor) -> Tensor:
        length = tokens.shape[-1]
        x = self.token(tokens) + self.position.weight[:length]
        return self.head(self.norm(self.blocks(x)))


def transformer_lm(vocab: int = 256, context: int = 64, width: int = 64, layers: int = 2, heads: int = 4) -> nn.Module:
    """The pydoc-transformer network (defaults: 136,960 parameters)."""
    # Under torch.func.vmap on a CPU, scaled_dot_product_attention's CPU kernel has no batching rule: torch runs
    # it once per population member and says so in a warning. Measured here, that costs no more than an
    # explicit masked-softmax attention batched (and one config alone runs faster with the kernel): not news.
    warnings.filterwarnings("ignore", message=r"There is a performance drop because we have not yet implemented "
                                              r"the batching rule for aten::_scaled_dot_product_flash_attention")
    return TransformerLM(vocab, context, width, layers, heads)
