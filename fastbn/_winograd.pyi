"""Type stub of fastbn._winograd (compiled).  Called only by fastbn.kernels, which
validates arguments and transforms the filters; arrays are C-contiguous, float32
or float64 (one dtype per call)."""
import numpy as np
import numpy.typing as npt

_Floats = npt.NDArray[np.float32] | npt.NDArray[np.float64]

def forward(x: _Floats, U: _Floats, bias: _Floats | None, y: _Floats, ph: int, pw: int,
            nthreads: int) -> None: ...
def weight_grad(dy: _Floats, x: _Floats, parts: _Floats, ph: int, pw: int,
                nthreads: int) -> None: ...
