"""ResNet in plain torch, with torchvision's parameter names.

torchvision does not work on this machine, so this is a small re-implementation whose
`state_dict()` keys and shapes equal torchvision's `resnet18/34/50/101/152` (conv1, bn1,
layer1..layer4 with BasicBlock/Bottleneck conv1/bn1/..., downsample.0/.1, fc): the usual
ImageNet files load with `load_backbone_weights`.

Backbone interface (shared with `hrnet.HRNet`), so SD/TD can sit between the parts:
    stem_conv(x): (N, 3, H, W)    -> (N, width, H/4, W/4)            conv1, bn1, relu, maxpool
    stem(x):  (N, 3, H, W)        -> (N, stem_channels, H/4, W/4)    stem_conv + layer1
    rest(x):  (N, stem_channels, H/4, W/4) -> (N, out_channels, H/32, W/32)   layer2..layer4
"""

from __future__ import annotations

import torch
from torch import nn


def init_conv_bn(module: nn.Module) -> None:
    """torchvision's / HRNet's initialisation: He-normal convs (fan_out), unit BN; Linear keeps
    its default. From-scratch runs then match the reference implementations."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual (ResNet-18/34). Output channels = planes."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample  # None or Sequential(conv1x1, bn): keys downsample.0/.1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided, torchvision "v1.5") -> 1x1 x4 channels, with a residual."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


# depth -> (block type, blocks per stage), as in torchvision / He et al. 2016.
RESNET_LAYOUTS: dict[int, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


class ResNet(nn.Module):
    """ResNet backbone with the stem/rest split.

    depth: 18/34/50/101/152 picks the block type and, unless `blocks` is given, the blocks per
    stage. width: channels of the first stage before expansion (64 = standard; 16 gives a tiny
    CPU variant). blocks: override of the blocks per stage, e.g. (1, 1, 1, 1).
    classifier: keep the ImageNet `fc` (num_classes outputs after global average pooling); it is
    not used by `stem`/`rest`, only by `classify`, and exists so torchvision files load whole.
    """

    def __init__(self, depth: int = 50, width: int = 64,
                 blocks: tuple[int, ...] | list[int] | None = None,
                 classifier: bool = False, num_classes: int = 1000):
        super().__init__()
        if depth not in RESNET_LAYOUTS:
            raise ValueError(f"ResNet depth must be one of {sorted(RESNET_LAYOUTS)}, got {depth}")
        block, default_blocks = RESNET_LAYOUTS[depth]
        blocks = tuple(default_blocks if blocks is None else blocks)
        if len(blocks) != 4 or min(blocks) < 1:
            raise ValueError(f"blocks must be 4 positive counts, got {blocks}")
        self.depth, self.width, self.blocks = depth, width, blocks

        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, width, blocks[0], stride=1)
        self.layer2 = self._make_layer(block, width * 2, blocks[1], stride=2)
        self.layer3 = self._make_layer(block, width * 4, blocks[2], stride=2)
        self.layer4 = self._make_layer(block, width * 8, blocks[3], stride=2)
        self.stem_conv_channels = width                   # 64 for ResNet-50
        self.stem_channels = width * block.expansion      # 256 for ResNet-50
        self.out_channels = width * 8 * block.expansion   # 2048 for ResNet-50
        self.fc = nn.Linear(self.out_channels, num_classes) if classifier else None
        init_conv_bn(self)

    def _make_layer(self, block: type[nn.Module], planes: int, n_blocks: int,
                    stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, n_blocks)]
        return nn.Sequential(*layers)


    def stem_conv(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, width, H/4, W/4): conv1, bn1, relu, maxpool."""
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, stem_channels, H/4, W/4): stem_conv, then layer1."""
        return self.layer1(self.stem_conv(x))

    def rest(self, x: torch.Tensor) -> torch.Tensor:
        """(N, stem_channels, H/4, W/4) -> (N, out_channels, H/32, W/32): layer2..layer4."""
        return self.layer4(self.layer3(self.layer2(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> final feature map (N, out_channels, H/32, W/32)."""
        return self.rest(self.stem(x))

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> ImageNet logits (N, num_classes); needs classifier=True."""
        if self.fc is None:
            raise RuntimeError("this ResNet was built without its classifier (classifier=False)")
        return self.fc(self.forward(x).mean(dim=(2, 3)))
