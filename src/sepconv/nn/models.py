"""Reference models: MobileNet v1 (and its full-convolution twin), a ResNet-18 layout, small CNNs.

No pretrained weights: these exist to reproduce the cost figures of the papers with
:func:`sepconv.nn.profile`, to benchmark, and to run the experiments on structured layers.

References
----------
A. G. Howard et al., "MobileNets: Efficient Convolutional Neural Networks for Mobile Vision
Applications", arXiv:1704.04861 (2017), Table 1 (body), Tables 4, 6 and 7 (costs).
K. He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, Table 1 (18-layer).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from .._validate import check_bool, check_nonnegative_int, check_positive_float
from ._args import check_dims, make_activation, make_norm
from .layers import LAYERS, DepthwiseSeparableConv2d

__all__ = [
    "MODELS",
    "ConvNormAct",
    "MobileNetV1",
    "ResNet",
    "SmallCNN",
    "create_model",
    "mobilenet_v1",
    "resnet18",
    "small_cnn",
]

_CONVS: dict[int, type[nn.Module]] = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_POOLS: dict[int, type[nn.Module]] = {
    1: nn.AdaptiveAvgPool1d,
    2: nn.AdaptiveAvgPool2d,
    3: nn.AdaptiveAvgPool3d,
}
_MAXPOOLS: dict[int, type[nn.Module]] = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}


class ConvNormAct(nn.Module):
    """``conv`` -> ``bn`` -> ``act`` (timm's ConvNormAct): a standard conv block.

    Examples
    --------
    >>> import torch
    >>> block = ConvNormAct(3, 8, 3, stride=2, padding=1)
    >>> tuple(block(torch.randn(1, 3, 16, 16)).shape)
    (1, 8, 8, 8)
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        *,
        groups: int = 1,
        dims: int = 2,
        norm: Any = "batch",
        activation: Any = "relu",
    ) -> None:
        super().__init__()
        dims = check_dims(dims)
        self.conv = _CONVS[dims](
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            groups=groups,
            bias=norm is None,
        )
        self.bn = make_norm(norm, out_channels, dims, None, None)
        self.act = make_activation(activation)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        x = self.bn(x)
        x = self.act(x)
        return x


# ----------------------------------------------------------------------------------------------
# MobileNet v1
# ----------------------------------------------------------------------------------------------

#: Howard et al. 2017, Table 1: (output channels, stride) of the 13 depthwise-separable blocks.
#: The table's second-to-last "Conv dw / s2" on a 7x7 input is a known typo: it has stride 1
#: (the output stays 7x7, as the table's next row and the reference implementation show).
MOBILENET_V1_BLOCKS = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)


class MobileNetV1(nn.Module):
    """MobileNet v1 (Howard et al. 2017): a 3x3 stem then 13 depthwise-separable blocks.

    ``conv_stem`` (3x3, stride 2, 32 channels) -> ``bn1`` -> ``act1`` -> ``blocks`` (13 x
    :class:`~sepconv.nn.DepthwiseSeparableConv2d` with BN and ReLU after both convs, or
    :class:`ConvNormAct` 3x3 convs for the paper's "Conv MobileNet") -> ``global_pool`` ->
    ``classifier`` (fully connected). Channels scale with ``width_mult`` (the paper's
    alpha); ``resolution`` (rho) only sets ``default_input_shape``, the network is fully
    convolutional.
    """

    def __init__(
        self,
        width_mult: float = 1.0,
        resolution: int = 224,
        num_classes: int = 1000,
        full_conv: bool = False,
        *,
        in_chans: int = 3,
        activation: Any = "relu",
    ) -> None:
        super().__init__()
        width_mult = check_positive_float(width_mult, "width_mult")
        resolution = check_nonnegative_int(resolution, "resolution", minimum=32)
        num_classes = check_nonnegative_int(num_classes, "num_classes", minimum=1)
        in_chans = check_nonnegative_int(in_chans, "in_chans", minimum=1)
        full_conv = check_bool(full_conv, "full_conv")

        def ch(c: int) -> int:
            return max(1, int(c * width_mult))

        self.width_mult = width_mult
        self.resolution = resolution
        self.full_conv = full_conv
        self.default_input_shape = (1, in_chans, resolution, resolution)
        c = ch(32)
        self.conv_stem = nn.Conv2d(in_chans, c, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.act1 = make_activation(activation)
        blocks: list[nn.Module] = []
        for out, stride in MOBILENET_V1_BLOCKS:
            out = ch(out)
            if full_conv:
                blocks.append(ConvNormAct(c, out, 3, stride, 1, activation=activation))
            else:
                blocks.append(
                    DepthwiseSeparableConv2d(
                        c, out, 3, stride, 1, bias=False, norm="batch", activation=activation
                    )
                )
            c = out
        self.blocks = nn.Sequential(*blocks)
        self.num_features = c
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act1(self.bn1(self.conv_stem(x)))
        x = self.blocks(x)
        return self.classifier(self.flatten(self.global_pool(x)))


def mobilenet_v1(
    width_mult: float = 1.0,
    resolution: int = 224,
    num_classes: int = 1000,
    full_conv: bool = False,
    **kwargs: Any,
) -> MobileNetV1:
    """MobileNet v1 faithful to Howard et al. 2017, Table 1 (no pretrained weights).

    Parameters
    ----------
    width_mult : float
        The width multiplier alpha (0.25, 0.5, 0.75, 1.0 in the paper).
    resolution : int
        The input resolution rho (224, 192, 160, 128 in the paper): ``default_input_shape``.
    num_classes : int
    full_conv : bool
        The paper's "Conv MobileNet" twin (Table 4): every depthwise-separable block replaced
        by a standard 3x3 conv with the same input/output channels and stride.

    Notes
    -----
    :func:`sepconv.nn.profile` counts multiply-adds as the paper does (conv layers plus the
    fully connected layer, biases and BN apart) and reproduces it: 1.0 MobileNet-224 569M
    mult-adds and 4.2M parameters, Conv MobileNet 4866M and 29.3M.

    Examples
    --------
    >>> model = mobilenet_v1(0.25, 128)
    >>> model.default_input_shape
    (1, 3, 128, 128)
    """
    return MobileNetV1(width_mult, resolution, num_classes, full_conv, **kwargs)


# ----------------------------------------------------------------------------------------------
# ResNet-18 layout (1-D, 2-D or 3-D)
# ----------------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """Two 3x3 convs with BN, ReLU after each, identity (or 1x1 projection) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int, dims: int) -> None:
        super().__init__()
        conv = _CONVS[dims]
        self.conv1 = conv(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = make_norm("batch", cout, dims, None, None)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = conv(cout, cout, 3, padding=1, bias=False)
        self.bn2 = make_norm("batch", cout, dims, None, None)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                conv(cin, cout, 1, stride=stride, bias=False),
                make_norm("batch", cout, dims, None, None),
            )
        self.act2 = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        return self.act2(self.bn2(self.conv2(x)) + shortcut)


class ResNet(nn.Module):
    """ResNet with basic blocks (He et al. 2016), for any number of spatial dimensions."""

    def __init__(
        self,
        layers: tuple[int, ...] = (2, 2, 2, 2),
        num_classes: int = 1000,
        *,
        dims: int = 2,
        in_chans: int = 3,
        width_mult: float = 1.0,
        resolution: int = 224,
    ) -> None:
        super().__init__()
        dims = check_dims(dims)
        width_mult = check_positive_float(width_mult, "width_mult")
        widths = [max(1, int(w * width_mult)) for w in (64, 128, 256, 512)]
        self.default_input_shape = (1, in_chans) + (resolution,) * dims
        self.conv_stem = _CONVS[dims](in_chans, widths[0], 7, stride=2, padding=3, bias=False)
        self.bn1 = make_norm("batch", widths[0], dims, None, None)
        self.act1 = nn.ReLU(inplace=True)
        self.maxpool = _MAXPOOLS[dims](3, stride=2, padding=1)
        stages: list[nn.Module] = []
        c = widths[0]
        for i, (n, w) in enumerate(zip(layers, widths, strict=True)):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(c, w, 2 if (j == 0 and i > 0) else 1, dims))
                c = w
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.global_pool = _POOLS[dims](1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act1(self.bn1(self.conv_stem(x)))
        x = self.maxpool(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.flatten(self.global_pool(x)))


def resnet18(num_classes: int = 1000, *, dims: int = 2, **kwargs: Any) -> ResNet:
    """The ResNet-18 layout: 20 convolutions (stem, 16 in blocks, 3 projections), 11.7M params.

    ``dims=3`` gives the volumetric variant (as in MONAI/MedicalNet); ``width_mult`` scales
    the channels. No pretrained weights.

    Examples
    --------
    >>> sum(p.numel() for p in resnet18().parameters())
    11689512
    """
    return ResNet((2, 2, 2, 2), num_classes, dims=dims, **kwargs)


# ----------------------------------------------------------------------------------------------
# small CNN family
# ----------------------------------------------------------------------------------------------

SMALL_CNN_KINDS = ("standard", "depthwise", "spatial", "cp")


class SmallCNN(nn.Module):
    """A small CNN whose body convs are standard, depthwise-separable, spatial or CP layers.

    ``stem`` (standard 3x3 conv, BN, ReLU) -> ``blocks`` (``depth`` x [structured conv of
    ``kind``, BN, ReLU], stride 2 and doubled width every second block) -> ``global_pool``
    -> ``classifier``. Everything except ``kind`` (and ``rank``) is equal across the family,
    so accuracy and cost differences are due to the structure of the convs.
    """

    def __init__(
        self, kind: str = "standard", *, dims: int = 2, in_chans: int = 3, num_classes: int = 10,
        width: int = 32, depth: int = 4, kernel_size: int = 3, rank: int = 1, resolution: int = 32,
        width_mult: float = 1.0,
    ) -> None:  # fmt: skip
        super().__init__()
        if kind not in SMALL_CNN_KINDS:
            raise ValueError(f"kind must be one of {list(SMALL_CNN_KINDS)}, got {kind!r}")
        dims = check_dims(dims)
        depth = check_nonnegative_int(depth, "depth", minimum=1)
        width_mult = check_positive_float(width_mult, "width_mult")
        width = max(1, int(check_nonnegative_int(width, "width", minimum=1) * width_mult))
        in_chans = check_nonnegative_int(in_chans, "in_chans", minimum=1)
        num_classes = check_nonnegative_int(num_classes, "num_classes", minimum=1)
        resolution = check_nonnegative_int(resolution, "resolution", minimum=1)
        kernel_size = check_nonnegative_int(kernel_size, "kernel_size", minimum=1)
        rank = check_nonnegative_int(rank, "rank", minimum=1)
        if kind == "spatial" and dims == 1:
            raise ValueError("kind='spatial' needs dims=2 or 3")
        self.kind = kind
        self.default_input_shape = (1, in_chans) + (resolution,) * dims
        self.stem = ConvNormAct(in_chans, width, 3, 1, 1, dims=dims)
        pad = kernel_size // 2
        blocks: list[nn.Module] = []
        c = width
        for i in range(depth):
            stride = 2 if i % 2 == 1 else 1
            out = c * 2 if stride == 2 else c
            conv: nn.Module
            if kind == "standard":
                conv = _CONVS[dims](c, out, kernel_size, stride, pad, bias=False)
            else:  # rank: the depth multiplier of a depthwise-separable layer
                rank_arg = {"depth_multiplier" if kind == "depthwise" else "rank": rank}
                layer: Any = LAYERS[kind][dims]
                conv = layer(c, out, kernel_size, stride, pad, bias=False, **rank_arg)
            blocks.append(
                nn.Sequential(
                    conv, make_norm("batch", out, dims, None, None), nn.ReLU(inplace=True)
                )
            )
            c = out
        self.blocks = nn.Sequential(*blocks)
        self.global_pool = _POOLS[dims](1)
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        x = self.blocks(x)
        return self.classifier(self.flatten(self.global_pool(x)))


def small_cnn(kind: str = "standard", **kwargs: Any) -> SmallCNN:
    """A small CNN family for experiments: the same network with standard or structured convs.

    Parameters
    ----------
    kind : {'standard', 'depthwise', 'spatial', 'cp'}
        Structure of the body convs (``rank``: depth multiplier, spatial rank or CP rank).
    **kwargs
        ``dims`` (1, 2, 3), ``in_chans``, ``num_classes``, ``width``, ``depth``,
        ``kernel_size``, ``rank``, ``resolution`` (sets ``default_input_shape``).

    Examples
    --------
    >>> import torch
    >>> model = small_cnn("depthwise", width=8, depth=2)
    >>> tuple(model(torch.randn(2, 3, 32, 32)).shape)
    (2, 10)
    """
    return SmallCNN(kind, **kwargs)


#: Factories by name, for :func:`create_model` and ``sepconv profile MODEL``.
MODELS: dict[str, Callable[..., nn.Module]] = {
    "mobilenet_v1": mobilenet_v1,
    "resnet18": resnet18,
    "small_cnn": small_cnn,
}


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a model by name (one of :data:`MODELS`).

    Examples
    --------
    >>> type(create_model("mobilenet_v1", width_mult=0.5)).__name__
    'MobileNetV1'
    """
    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {name!r}")
    return MODELS[name](**kwargs)
