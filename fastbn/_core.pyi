"""Type stubs for the compiled Batch Normalization kernels (fastbn/_core.pyx).

Arrays are C-contiguous (N, C, *spatial) arrays (x, y, dy, dx), read as (N, C, L),
or length-C vectors, all of one dtype: float32 or float64 (the compiled code
dispatches on x's dtype).  Internal API: call fastbn.kernels, which validates
inputs.
"""
from typing import TypeVar

import numpy as np
import numpy.typing as npt

_F = TypeVar("_F", np.float32, np.float64)

def forward_train(
    x: npt.NDArray[_F],
    weight: npt.NDArray[_F] | None,
    bias: npt.NDArray[_F] | None,
    y: npt.NDArray[_F],
    save_mean: npt.NDArray[_F],
    save_invstd: npt.NDArray[_F],
    running_mean: npt.NDArray[_F] | None,
    running_var: npt.NDArray[_F] | None,
    momentum: float,
    eps: float,
    nthreads: int,
    relu: bool = False,
) -> None: ...
def channel_sums(x: npt.NDArray[_F], out: npt.NDArray[np.float64], nthreads: int) -> None: ...
def forward_eval(
    x: npt.NDArray[_F],
    weight: npt.NDArray[_F] | None,
    bias: npt.NDArray[_F] | None,
    running_mean: npt.NDArray[_F],
    running_var: npt.NDArray[_F],
    y: npt.NDArray[_F],
    save_invstd: npt.NDArray[_F],
    eps: float,
    nthreads: int,
    relu: bool = False,
) -> None: ...
def backward(
    dy: npt.NDArray[_F],
    x: npt.NDArray[_F],
    weight: npt.NDArray[_F] | None,
    mean: npt.NDArray[_F],
    invstd: npt.NDArray[_F],
    dx: npt.NDArray[_F],
    dweight: npt.NDArray[_F] | None,
    dbias: npt.NDArray[_F] | None,
    training: bool,
    nthreads: int,
    bias: npt.NDArray[_F] | None = None,
    relu: bool = False,
) -> None: ...
