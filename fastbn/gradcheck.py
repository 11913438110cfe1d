"""Check the tape's gradients against central finite differences in float64."""
import numpy as np

from .autograd import Tensor, no_grad

__all__ = ["gradcheck", "GradcheckError"]


class GradcheckError(AssertionError):
    """An analytic gradient disagrees with its finite-difference estimate."""


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, seed=0):
    """Check the gradients ``fn`` records against central differences.

    As ``torch.autograd.gradcheck``, but it raises on a mismatch rather than returning
    False.

    Every checked input is copied to float64 first; ``fn`` must keep float64 (any array
    it closes over, e.g. running statistics, should be float64 too).  A non-scalar
    output is reduced to ``sum(out * v)`` with a fixed random v, which checks the
    vector-Jacobian product the tape computes.

    Parameters
    ----------
    fn : callable
        Called as ``fn(*inputs)``; returns a Tensor.  It must be deterministic (give
        dropout a freshly seeded generator).
    inputs : Tensor or sequence
        Tensors (those with ``requires_grad=True`` are checked) and other values passed
        through unchanged.
    eps : float, optional
        The finite-difference step.
    atol : float, optional
        Absolute tolerance.
    rtol : float, optional
        Relative tolerance: each element must satisfy
        ``|analytic - numeric| <= atol + rtol * |numeric|``.
    seed : int, optional
        Seeds the random v.

    Returns
    -------
    bool
        True.

    Raises
    ------
    GradcheckError
        Naming the input and the worst element, when the gradients disagree or the
        output does not depend on any checked input.
    ValueError
        When no input Tensor requires grad.
    TypeError
        When fn returns no Tensor, or not float64.
    """
    if isinstance(inputs, Tensor) or not isinstance(inputs, (list, tuple)):
        inputs = (inputs,)
    args = [Tensor(np.array(x.data, dtype=np.float64), requires_grad=x.requires_grad)
            if isinstance(x, Tensor) else x for x in inputs]
    checked = [i for i, x in enumerate(args) if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input Tensor has requires_grad=True")

    out = fn(*args)
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck: fn must return a Tensor, got {type(out).__name__}")
    if out.dtype != np.float64:
        raise TypeError(f"gradcheck: fn returned {out.dtype} for float64 inputs; "
                        "keep the computation in float64")
    v = np.random.default_rng(seed).standard_normal(out.shape)
    if not out.requires_grad:
        raise GradcheckError("gradcheck: the output does not depend on any checked input")
    out.backward(v)

    def objective():
        with no_grad():
            return float(np.sum(fn(*args).data * v))

    for i in checked:
        x = args[i].data
        analytic = np.zeros_like(x) if args[i].grad is None else args[i].grad
        numeric = np.empty_like(x)
        flat, num = x.reshape(-1), numeric.reshape(-1)   # views: perturb in place
        for k in range(flat.size):
            orig = flat[k]
            flat[k] = orig + eps
            plus = objective()
            flat[k] = orig - eps
            minus = objective()
            flat[k] = orig
            num[k] = (plus - minus) / (2 * eps)
        err = np.abs(analytic - numeric)
        bad = err > atol + rtol * np.abs(numeric)
        if bad.any():
            k = np.unravel_index(np.argmax(np.where(bad, err, -1)), x.shape)
            raise GradcheckError(
                f"gradcheck: input {i} (shape {x.shape}): {int(bad.sum())} of {x.size} "
                f"elements disagree; worst at {tuple(int(j) for j in k)}: analytic "
                f"{analytic[k]:.6g}, numeric {numeric[k]:.6g}")
    return True
