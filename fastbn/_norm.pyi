"""Type stubs for the compiled Group/Layer/Instance Normalization kernels
(fastbn/_norm.pyx).

x, y, dy, dx are C-contiguous arrays of N * G * Cg * L values read as (N, G * Cg, L),
all of one dtype, float32 or float64 (the compiled code dispatches on x's dtype);
weight, bias, dweight, dbias have G * Cg values; mean and invstd N * G.  Internal API:
call fastbn.kernels, which validates inputs.
"""
from typing import TypeVar

import numpy as np
import numpy.typing as npt

_F = TypeVar("_F", np.float32, np.float64)

def forward(
    x: npt.NDArray[_F],
    N: int,
    G: int,
    Cg: int,
    L: int,
    weight: npt.NDArray[_F] | None,
    bias: npt.NDArray[_F] | None,
    y: npt.NDArray[_F],
    mean: npt.NDArray[_F],
    invstd: npt.NDArray[_F],
    var: npt.NDArray[np.float64] | None,
    eps: float,
    nthreads: int,
) -> None: ...
def backward(
    dy: npt.NDArray[_F],
    x: npt.NDArray[_F],
    N: int,
    G: int,
    Cg: int,
    L: int,
    weight: npt.NDArray[_F] | None,
    mean: npt.NDArray[_F],
    invstd: npt.NDArray[_F],
    dx: npt.NDArray[_F] | None,
    dweight: npt.NDArray[_F] | None,
    dbias: npt.NDArray[_F] | None,
    nthreads: int,
) -> None: ...
def channel_affine(
    x: npt.NDArray[_F],
    y: npt.NDArray[_F],
    center: npt.NDArray[_F],
    scale: npt.NDArray[_F],
    shift: npt.NDArray[_F],
    nthreads: int,
) -> None: ...
