"""Type stub of fastbn._conv (compiled).  Called only by fastbn.kernels, which
validates arguments; arrays are C-contiguous, float32 or float64 (one dtype per call)."""
import numpy as np
import numpy.typing as npt

_Floats = npt.NDArray[np.float32] | npt.NDArray[np.float64]
_Pair = tuple[int, int]

def im2col(x: _Floats, cols: _Floats, kernel: _Pair, stride: _Pair, padding: _Pair,
           dilation: _Pair, OH: int, OW: int, nthreads: int) -> None: ...
def conv_forward(x: _Floats, weight: _Floats, bias: _Floats | None, cols: _Floats, y: _Floats,
                 kernel: _Pair, stride: _Pair, padding: _Pair, dilation: _Pair, OH: int,
                 OW: int, identity: bool, nthreads: int) -> None: ...
def conv_backward(dy: _Floats, weight: _Floats, cols: _Floats | None, dx: _Floats | None,
                  parts: _Floats | None, kernel: _Pair, stride: _Pair, padding: _Pair,
                  dilation: _Pair, OH: int, OW: int, identity: bool, nthreads: int) -> None: ...
def max_pool_forward(x: _Floats, y: _Floats, indices: npt.NDArray[np.int64], kernel: _Pair,
                     stride: _Pair, padding: _Pair, nthreads: int) -> None: ...
def max_pool_backward(dy: _Floats, indices: npt.NDArray[np.int64], dx: _Floats,
                      nthreads: int) -> int: ...
def avg_pool_forward(x: _Floats, y: _Floats, kernel: _Pair, stride: _Pair, padding: _Pair,
                     mode: int, nthreads: int) -> None: ...
def avg_pool_backward(dy: _Floats, dx: _Floats, kernel: _Pair, stride: _Pair, padding: _Pair,
                      mode: int, nthreads: int) -> None: ...
