"""sepconv.nn: structured convolution layers, optimal conversion of trained convs, a profiler.

Needs the ``nn`` extra (PyTorch); ``import sepconv`` alone never imports torch.
"""

from . import functional, models
from .convert import ConvertReport, convert, load_converted, save_converted
from .factorize import KINDS, VBMF, LayerReport, evbmf, factorize
from .functional import (
    depthwise_separable_conv,
    low_rank_conv,
    spatially_separable_conv,
    tucker2_conv,
)
from .layers import (
    DepthwiseSeparableConv1d,
    DepthwiseSeparableConv2d,
    DepthwiseSeparableConv3d,
    LowRankConv1d,
    LowRankConv2d,
    LowRankConv3d,
    SpatiallySeparableConv2d,
    SpatiallySeparableConv3d,
    Tucker2Conv1d,
    Tucker2Conv2d,
    Tucker2Conv3d,
)
from .profile import LayerProfile, MachineRates, Profile, machine_rates, profile
from .recover import RecoverReport, recover

__all__ = [
    "KINDS",
    "VBMF",
    "ConvertReport",
    "DepthwiseSeparableConv1d",
    "DepthwiseSeparableConv2d",
    "DepthwiseSeparableConv3d",
    "LayerProfile",
    "LayerReport",
    "LowRankConv1d",
    "LowRankConv2d",
    "LowRankConv3d",
    "MachineRates",
    "Profile",
    "RecoverReport",
    "SpatiallySeparableConv2d",
    "SpatiallySeparableConv3d",
    "Tucker2Conv1d",
    "Tucker2Conv2d",
    "Tucker2Conv3d",
    "convert",
    "depthwise_separable_conv",
    "evbmf",
    "factorize",
    "functional",
    "load_converted",
    "low_rank_conv",
    "machine_rates",
    "models",
    "profile",
    "recover",
    "save_converted",
    "spatially_separable_conv",
    "tucker2_conv",
]
