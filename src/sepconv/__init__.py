"""sepconv: separable convolution — test, factorize and run any kernel the cheapest exact way.

>>> import sepconv
>>> f = sepconv.separate("gaussian:sigma=2")
>>> f.rank, f.macs, f.direct_macs
(1, 34, 289)
"""

from . import cost, kernels
from ._validate import ArgumentError
from .factor import Factorization, is_separable, separable_rank, separate
from .filters import (
    convolve,
    convolve1d,
    correlate,
    correlate1d,
    filter,
    gaussian_filter,
    gaussian_filter1d,
    gaussian_gradient_magnitude,
    gaussian_laplace,
    laplace,
    prewitt,
    sobel,
    uniform_filter,
    uniform_filter1d,
)
from .plan import Plan, make_plan

__version__ = "0.1.0"

__all__ = [
    "ArgumentError",
    "Factorization",
    "Plan",
    "__version__",
    "convolve",
    "convolve1d",
    "correlate",
    "correlate1d",
    "cost",
    "filter",
    "gaussian_filter",
    "gaussian_filter1d",
    "gaussian_gradient_magnitude",
    "gaussian_laplace",
    "is_separable",
    "kernels",
    "laplace",
    "make_plan",
    "prewitt",
    "separable_rank",
    "separate",
    "sobel",
    "uniform_filter",
    "uniform_filter1d",
]
