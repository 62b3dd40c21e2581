"""sepconv: separable convolution — test, factorize and run any kernel the cheapest exact way.

>>> import sepconv
>>> f = sepconv.separate("gaussian:sigma=2")
>>> f.rank, f.macs, f.direct_macs
(1, 34, 289)
"""

from . import cost, kernels
from .factor import Factorization, is_separable, separable_rank, separate

__version__ = "0.1.0"

__all__ = [
    "Factorization",
    "__version__",
    "cost",
    "is_separable",
    "kernels",
    "separable_rank",
    "separate",
]
