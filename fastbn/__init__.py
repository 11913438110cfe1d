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
from .tensor import Tensor, enable_grad, no_grad, tensor
from .gradcheck import gradcheck
from .random import manual_seed
from . import nn, optim, data, memory

__all__ = ["get_num_threads", "set_num_threads", "show_config", "threads", "kernels",
           "Tensor", "tensor", "no_grad", "enable_grad", "gradcheck", "nn", "__version__",
           "manual_seed", "optim", "data", "memory"]
