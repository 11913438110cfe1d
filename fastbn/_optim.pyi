"""Type stub of fastbn._optim (compiled): SGD, Adam, AdamW, RMSprop and Adadelta
parameter updates, in place, a list of parameters per call.  Internal API: call
fastbn.kernels.sgd_updates, adam_updates, ..., which check the arrays when these
return False (an operand not a plain, aligned, C-contiguous array of its
parameter's dtype and shape)."""
from typing import TypeVar

import numpy as np
import numpy.typing as npt

_F = TypeVar("_F", np.float32, np.float64)

def sgd_many(ps: list[npt.NDArray[_F]], gs: list[npt.NDArray[_F]],
             bufs: list[npt.NDArray[_F] | None], firsts: list[bool], lr: float,
             weight_decay: float, momentum: float, dampening: float, nesterov: bool,
             nthreads: int) -> bool: ...
def adam_many(ps: list[npt.NDArray[_F]], gs: list[npt.NDArray[_F]], ms: list[npt.NDArray[_F]],
              vs: list[npt.NDArray[_F]], steps: list[int], lr: float, weight_decay: float,
              beta1: float, beta2: float, eps: float, nthreads: int) -> bool: ...
def adamw_many(ps: list[npt.NDArray[_F]], gs: list[npt.NDArray[_F]], ms: list[npt.NDArray[_F]],
               vs: list[npt.NDArray[_F]], vmaxs: list[npt.NDArray[_F] | None],
               steps: list[int], lr: float, weight_decay: float, beta1: float,
               beta2: float, eps: float, nthreads: int) -> bool: ...
def rmsprop_many(ps: list[npt.NDArray[_F]], gs: list[npt.NDArray[_F]],
                 square_avgs: list[npt.NDArray[_F]], grad_avgs: list[npt.NDArray[_F] | None],
                 bufs: list[npt.NDArray[_F] | None], lr: float, weight_decay: float,
                 alpha: float, eps: float, momentum: float, nthreads: int) -> bool: ...
def adadelta_many(ps: list[npt.NDArray[_F]], gs: list[npt.NDArray[_F]],
                  square_avgs: list[npt.NDArray[_F]], acc_deltas: list[npt.NDArray[_F]],
                  lr: float, weight_decay: float, rho: float, eps: float,
                  nthreads: int) -> bool: ...
