"""The zoo's one architecture: ResNet-50's topology, 1/8 of its width, with a stem for 32-px images.

``resnet50-w8`` is timm's ``ResNet(block=Bottleneck, layers=[3, 4, 6, 3])`` — the 16 bottleneck blocks
(50 weight layers: stem + 48 + fc) of ResNet-50, expansion 4 — with

* per-stage bottleneck widths ``(8, 16, 32, 64)`` instead of ``(64, 128, 256, 512)`` (output features
  256 instead of 2048), and
* a single 3×3 stride-2 stem convolution (8 channels) instead of 7×7 stride 2 + 3×3 max-pool, so a 32-px
  image reaches the four stages at 16, 8, 4 and 2 px (ImageNet's 224 px: 56, 28, 14, 7).

Why this size: 376 k parameters (0.75 MB in fp16, so 11 checkpoints ship in < 10 MB), ~4.5 M
multiply-adds per image; on 2 CPU cores it trains at ~1,000 images/s and infers at ~2,500 images/s,
which is what makes every recipe train in about a minute and the whole demo (every metric × every
checkpoint) run in about a minute. The full-width network (64-wide) is ~50× slower; the 16-wide one
is 2× slower and 4× larger on disk (25 MB for the zoo). Keeping ResNet-50's depth and bottleneck
structure keeps the organism close to the paper's study (one fixed ResNet-50, many recipes).

Weights initialisation is timm's (zero-initialised last BN of each block); the replaced stem conv uses
PyTorch's default; both are deterministic under ``torch.manual_seed``.
"""

from __future__ import annotations

from torch import nn

ARCH_NAME = "resnet50-w8"
WIDTHS = (8, 16, 32, 64)
LAYERS = (3, 4, 6, 3)


def resnet50_w8(num_classes: int = 10) -> nn.Module:
    """Narrow ResNet-50 for 32-px inputs (see the module docstring)."""
    from timm.models.resnet import Bottleneck, ResNet

    net = ResNet(
        block=Bottleneck,
        layers=list(LAYERS),
        num_classes=num_classes,
        channels=WIDTHS,
        stem_type="deep",  # only so that the stem's output width (2 * stem_width) can be set ...
        stem_width=WIDTHS[0] // 2,
    )
    # ... then the deep stem is replaced by one 3x3 stride-2 conv and the max-pool dropped
    net.conv1 = nn.Conv2d(3, WIDTHS[0], kernel_size=3, stride=2, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net
