"""fastbn: fast CPU Batch Normalization and a small trainer for batch-normalized nets."""
__version__ = "0.1.0"

try:
    from . import _openmp_helpers  # noqa: F401  (the first compiled module)
except ImportError as exc:  # pragma: no cover - depends on how fastbn was installed
    import os as _os

    if _os.path.exists(_os.path.join(_os.path.dirname(__file__), "_core.pyx")):
        raise ImportError(
            f"fastbn was imported from its source checkout ({_os.path.dirname(__file__)}), "
            "where its compiled extensions are not built. Build them in place with "
            "`pip install -e .`, or run from outside the checkout to use an installed "
            "fastbn.") from exc
    raise

from ._config import get_num_threads, set_num_threads, show_config, threads
from . import kernels
from ._types import (bool, device, double, float, float16, float32, float64, half, int, int8,
                     int16, int32, int64, long, short, uint8)
from .tensor import Tensor, enable_grad, is_grad_enabled, no_grad, tensor
from ._functions import (abs, absolute, arange, argmax, argmin, cat, clone, concat, empty, eq,
                         exp, flatten, from_numpy, full, full_like, ge, gt, is_tensor, le, log,
                         log_softmax, lt, matmul, max, maximum, mean, min, minimum, ne, numel,
                         ones, ones_like, permute, rand, randint, randn, randperm, relu, reshape,
                         sigmoid, softmax, sqrt, squeeze, stack, sum, tanh, transpose,
                         unsqueeze, zeros, zeros_like)
from .gradcheck import gradcheck
from .random import manual_seed
from .serialization import load, save
from . import accelerator, cuda, nn, optim, data, memory, utils

__all__ = ["get_num_threads", "set_num_threads", "show_config", "threads", "kernels",
           "Tensor", "tensor", "no_grad", "enable_grad", "is_grad_enabled", "gradcheck", "nn",
           "__version__", "manual_seed", "optim", "data", "memory", "save", "load", "device",
           "cuda", "accelerator", "utils",
           # dtypes
           "float32", "float", "float64", "double", "float16", "half", "int8", "uint8",
           "int16", "short", "int32", "int", "int64", "long", "bool",
           # torch.* functions
           "zeros", "ones", "full", "empty", "zeros_like", "ones_like", "full_like", "rand",
           "randn", "randint", "randperm", "arange", "from_numpy", "is_tensor", "numel",
           "cat", "concat", "stack", "flatten", "reshape", "unsqueeze", "squeeze", "transpose",
           "permute", "clone", "sum", "mean", "max", "min", "argmax", "argmin", "maximum",
           "minimum", "eq", "ne", "lt", "le", "gt", "ge", "exp", "log", "sqrt", "abs",
           "absolute", "matmul", "relu", "sigmoid", "tanh", "softmax", "log_softmax"]
