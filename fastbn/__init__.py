"""fastbn: fast CPU Batch Normalization and a small trainer for batch-normalized nets."""
__version__ = "0.1.0"

from ._config import get_num_threads, set_num_threads, show_config, threads
from . import kernels
from .tensor import Tensor, enable_grad, no_grad, tensor
from .gradcheck import gradcheck
from .random import manual_seed
from . import nn, optim, data

__all__ = ["get_num_threads", "set_num_threads", "show_config", "threads", "kernels",
           "Tensor", "tensor", "no_grad", "enable_grad", "gradcheck", "nn", "__version__",
           "manual_seed", "optim", "data"]
