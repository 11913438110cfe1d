"""Type stub of fastbn._activation (compiled): ReLU, ReLU of a sum, and the ReLU's
gradient.  Internal API: call fastbn.kernels.relu_forward / add_relu_forward /
relu_backward, which check the arrays
(C-contiguous, one float dtype, one size; outputs fresh)."""
from typing import TypeVar

import numpy as np
import numpy.typing as npt

_F = TypeVar("_F", np.float32, np.float64)

def relu(x: npt.NDArray[_F], y: npt.NDArray[_F], nthreads: int) -> None: ...
def add_relu(a: npt.NDArray[_F], b: npt.NDArray[_F], y: npt.NDArray[_F],
             nthreads: int) -> None: ...
def relu_grad(dy: npt.NDArray[_F], y: npt.NDArray[_F], dx: npt.NDArray[_F],
              nthreads: int) -> None: ...
