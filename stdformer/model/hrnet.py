"""HRNet classification network (Wang et al. 2020, "HRNet-Image-Classification") in plain torch.

Parameter names and shapes follow the official code, so `hrnetv2_w64_imagenet_pretrained.pth`
loads with `load_backbone_weights`: conv1, bn1, conv2, bn2, layer1, transition1..3,
stage2..4 (HighResolutionModule: branches, fuse_layers), incre_modules, downsamp_modules,
final_layer and (optionally) classifier.

Where the official code registers `None` (an identity transition or the diagonal of the fuse
layers) we register `nn.Identity`, which has no parameters, so the keys are unchanged.

Backbone interface (shared with `resnet.ResNet`):
    stem_conv(x): (N, 3, H, W) -> (N, 64, H/4, W/4)    conv1, conv2 (two stride-2 3x3)
    stem(x): (N, 3, H, W) -> (N, 256, H/4, W/4)        stem_conv, then layer1
    rest(x): (N, 256, H/4, W/4) -> (N, 2048, H/32, W/32)  stages 2-4 and the classification head
H and W must be multiples of 32 (the fuse layers upsample by exact powers of two).
"""

from __future__ import annotations

import torch
from torch import nn

from stdformer.model.resnet import BasicBlock, Bottleneck, init_conv_bn

# The classification HRNets (W18, W30, W32, W40, W44, W48, W64) share one layout; only the branch
# width W changes. Stage k has `modules` HighResolutionModules with k branches of `blocks` basic
# blocks; branch b has W * 2**b channels.
STAGE_MODULES = {2: 1, 3: 4, 4: 3}
BLOCKS_PER_BRANCH = 4
STAGE1_PLANES = 64                      # layer1: 4 bottlenecks of 64 planes -> 256 channels
STAGE1_BLOCKS = 4
HEAD_PLANES = (32, 64, 128, 256)        # incre_modules: bottlenecks -> 128, 256, 512, 1024 ch
FINAL_CHANNELS = 2048


def _conv_bn(in_ch: int, out_ch: int, kernel: int, stride: int, relu: bool,
             bias: bool = False) -> nn.Sequential:
    """Conv + BN (+ ReLU) as an indexable Sequential: keys .0 (conv) and .1 (bn)."""
    layers = [nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, bias=bias),
              nn.BatchNorm2d(out_ch)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _make_layer(block: type[nn.Module], inplanes: int, planes: int, n_blocks: int,
                stride: int = 1) -> nn.Sequential:
    """A run of residual blocks, with a 1x1 projection on the first when the shape changes."""
    downsample = None
    if stride != 1 or inplanes != planes * block.expansion:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes * block.expansion, 1, stride=stride, bias=False),
            nn.BatchNorm2d(planes * block.expansion),
        )
    layers = [block(inplanes, planes, stride, downsample)]
    layers += [block(planes * block.expansion, planes) for _ in range(1, n_blocks)]
    return nn.Sequential(*layers)


class HighResolutionModule(nn.Module):
    """Parallel branches (one per resolution) followed by all-to-all fusion.

    Input and output: a list of n tensors, branch b of shape (N, channels[b], H/2**b, W/2**b).
    fuse_layers[i][j] maps branch j to branch i: 1x1 conv + BN + nearest upsampling when j > i
    (lower resolution), identity when j == i, and i-j stride-2 3x3 convs when j < i.
    """

    def __init__(self, channels: list[int], n_blocks: int):
        super().__init__()
        n = len(channels)
        self.branches = nn.ModuleList(
            _make_layer(BasicBlock, c, c, n_blocks) for c in channels)
        self.fuse_layers = nn.ModuleList()
        if n == 1:
            return
        for i in range(n):
            row = nn.ModuleList()
            for j in range(n):
                if j > i:
                    row.append(nn.Sequential(
                        nn.Conv2d(channels[j], channels[i], 1, 1, 0, bias=False),
                        nn.BatchNorm2d(channels[i]),
                        nn.Upsample(scale_factor=2 ** (j - i), mode="nearest")))
                elif j == i:
                    row.append(nn.Identity())
                else:
                    # i-j stride-2 convs; only the last changes the channels (and has no ReLU,
                    # the ReLU comes after the sum).
                    steps = [_conv_bn(channels[j], channels[j], 3, 2, relu=True)
                             for _ in range(i - j - 1)]
                    steps.append(_conv_bn(channels[j], channels[i], 3, 2, relu=False))
                    row.append(nn.Sequential(*steps))
            self.fuse_layers.append(row)
        self.relu = nn.ReLU()

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        if len(xs) == 1:
            return xs
        fused = []
        for row in self.fuse_layers:
            y = row[0](xs[0])
            for j in range(1, len(xs)):
                y = y + row[j](xs[j])
            fused.append(self.relu(y))
        return fused


def _make_transition(pre: list[int], cur: list[int]) -> nn.ModuleList:
    """Adapt stage k's branches to stage k+1's: a 3x3 conv where the channels change (identity
    otherwise), and a new lowest-resolution branch made from the previous lowest by stride-2
    convs."""
    layers = nn.ModuleList()
    for i, c in enumerate(cur):
        if i < len(pre):
            layers.append(_conv_bn(pre[i], c, 3, 1, relu=True) if pre[i] != c else nn.Identity())
        else:
            steps = []
            for k in range(i + 1 - len(pre)):
                out = c if k == i - len(pre) else pre[-1]
                steps.append(_conv_bn(pre[-1], out, 3, 2, relu=True))
            layers.append(nn.Sequential(*steps))
    return layers


class HRNet(nn.Module):
    """HRNet-W{width} classification network with the stem/rest split.

    classifier: keep the (unused) ImageNet `classifier` Linear(2048, 1000). FastMETRO's HRNet
    keeps it, so it is part of the published parameter counts and of FastMETRO checkpoints.
    """

    def __init__(self, width: int = 64, classifier: bool = False, num_classes: int = 1000):
        super().__init__()
        self.width = width
        self.conv1 = nn.Conv2d(3, 64, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2 = nn.Conv2d(64, 64, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = _make_layer(Bottleneck, 64, STAGE1_PLANES, STAGE1_BLOCKS)
        self.stem_conv_channels = 64
        self.stem_channels = STAGE1_PLANES * Bottleneck.expansion  # 256

        channels = [self.stem_channels]
        for k in (2, 3, 4):
            new = [width * 2 ** b for b in range(k)]
            setattr(self, f"transition{k - 1}", _make_transition(channels, new))
            setattr(self, f"stage{k}", nn.Sequential(*(
                HighResolutionModule(new, BLOCKS_PER_BRANCH) for _ in range(STAGE_MODULES[k]))))
            channels = new

        # Head: lift each branch to 128/256/512/1024 channels, then fold from high to low
        # resolution with stride-2 convs, then a 1x1 conv to 2048.
        self.incre_modules = nn.ModuleList(
            _make_layer(Bottleneck, c, p, 1) for c, p in zip(channels, HEAD_PLANES))
        head = [p * Bottleneck.expansion for p in HEAD_PLANES]
        self.downsamp_modules = nn.ModuleList(
            _conv_bn(head[i], head[i + 1], 3, 2, relu=True, bias=True) for i in range(3))
        self.final_layer = _conv_bn(head[3], FINAL_CHANNELS, 1, 1, relu=True, bias=True)
        self.out_channels = FINAL_CHANNELS
        self.classifier = nn.Linear(FINAL_CHANNELS, num_classes) if classifier else None
        init_conv_bn(self)

    def stem_conv(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, 64, H/4, W/4): the two stride-2 3x3 convs."""
        x = self.relu(self.bn1(self.conv1(x)))   # (N, 64, H/2, W/2)
        return self.relu(self.bn2(self.conv2(x)))

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, 256, H/4, W/4): stem_conv, then layer1."""
        return self.layer1(self.stem_conv(x))

    def rest(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 256, H/4, W/4) -> (N, 2048, H/32, W/32)."""
        xs = [x]
        for k in (2, 3, 4):
            transition = getattr(self, f"transition{k - 1}")
            # Existing branches pass through (or a 3x3 conv); the new one comes from the lowest.
            xs = [t(xs[i]) if i < len(xs) else t(xs[-1]) for i, t in enumerate(transition)]
            xs = getattr(self, f"stage{k}")(xs)  # branch b: (N, W*2**b, H/2**(b+2), W/2**(b+2))
        y = self.incre_modules[0](xs[0])                          # (N, 128, H/4, W/4)
        for i, down in enumerate(self.downsamp_modules):
            y = self.incre_modules[i + 1](xs[i + 1]) + down(y)     # (N, 256/512/1024, ...)
        return self.final_layer(y)                                 # (N, 2048, H/32, W/32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rest(self.stem(x))

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> ImageNet logits; needs classifier=True."""
        if self.classifier is None:
            raise RuntimeError("this HRNet was built without its classifier (classifier=False)")
        return self.classifier(self.forward(x).mean(dim=(2, 3)))
