"""One check for booleans (sepconv._validate.check_bool), the same wherever a flag is taken."""

from __future__ import annotations

import numpy as np
import pytest

from sepconv import cost, kernels
from sepconv._validate import check_bool


@pytest.mark.parametrize("value", [True, False, np.True_, np.False_])
def test_check_bool_gives_a_python_bool(value):
    got = check_bool(value, "flag")
    assert type(got) is bool and got == bool(value)


@pytest.mark.parametrize("value", [1, 0, 1.0, "true", None, np.array([True])])
def test_check_bool_refuses_what_is_not_a_bool_naming_the_parameter(value):
    with pytest.raises(TypeError, match=r"^flag must be True or False, got "):
        check_bool(value, "flag")


def _nn_callers():
    torch = pytest.importorskip("torch")
    import sepconv.nn as snn
    from sepconv.nn.models import MobileNetV1

    return {
        "bias": lambda v: snn.LowRankConv2d(4, 6, 3, bias=v),
        "full_conv": lambda v: MobileNetV1(width_mult=0.25, resolution=32, full_conv=v),
        "inplace": lambda v: snn.convert(torch.nn.Conv2d(4, 6, 3), "depthwise", inplace=v),
    }


CALLERS = {
    "normalize": lambda v: kernels.binomial(3, normalize=v),
    "antialias": lambda v: kernels.disk(2, antialias=v),
    "bias": lambda v: cost.conv_params(4, 6, 3, bias=v),
}


@pytest.mark.parametrize("where", ["kernels", "cost", "nn"])
def test_every_flag_takes_numpy_bools_and_refuses_integers_with_one_wording(where):
    callers = (
        _nn_callers()
        if where == "nn"
        else {k: f for k, f in CALLERS.items() if (k == "bias") == (where == "cost")}
    )
    for name, call in callers.items():
        call(np.True_)  # a numpy bool is a bool (it was refused by the nn layers)
        with pytest.raises(TypeError, match=rf"^{name} must be True or False, got 1$"):
            call(1)
