"""Type stub of fastbn._optim (compiled): SGD and Adam parameter updates, in
place.  Internal API: call fastbn.kernels.sgd_update / adam_update, which check
that the arrays share one dtype (float32 or float64), one shape and are
C-contiguous."""
from typing import TypeVar

import numpy as np
import numpy.typing as npt

_F = TypeVar("_F", np.float32, np.float64)

def sgd(p: npt.NDArray[_F], g: npt.NDArray[_F], buf: npt.NDArray[_F] | None, lr: float,
        weight_decay: float, momentum: float, dampening: float, nesterov: bool, first: bool,
        nthreads: int) -> None: ...
def adam(p: npt.NDArray[_F], g: npt.NDArray[_F], m: npt.NDArray[_F], v: npt.NDArray[_F],
         lr: float, weight_decay: float, beta1: float, beta2: float, eps: float, step: int,
         nthreads: int) -> None: ...
