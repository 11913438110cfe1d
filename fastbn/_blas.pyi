"""Type stub of fastbn._blas (compiled): GEMMs inside fastbn's threads."""
import numpy as np
import numpy.typing as npt

_Floats = npt.NDArray[np.float32] | npt.NDArray[np.float64]

def set_thread_control(address: int) -> None: ...
def matmul(a: _Floats, b: _Floats, out: _Floats, ta: bool, tb: bool, nthreads: int) -> None: ...
