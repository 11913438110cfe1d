"""Shared by the normalization-family tests: plain float64 NumPy references of Group,
Layer and Instance Normalization, Batch Renormalization and Ghost Batch Normalization
(tests/conftest.py puts this directory on sys.path)."""
import numpy as np

from bn_reference import ref_backward_train, ref_forward_train


def _rows_forward(x2, w2, b2, eps):
    """Rows of x2 (R, M) normalized with their own mean and biased variance, then
    * w2 + b2 (arrays broadcasting to (R, M)); returns y2, mean, var, invstd."""
    mean = x2.mean(axis=1)
    var = ((x2 - mean[:, None]) ** 2).mean(axis=1)
    invstd = 1.0 / np.sqrt(var + eps)
    xhat = (x2 - mean[:, None]) * invstd[:, None]
    return xhat * w2 + b2, mean, var, invstd


def _rows_backward(dy2, x2, w2, eps):
    """dx of _rows_forward, and the per-element dy * xhat (for the weight gradient)."""
    _, mean, _, invstd = _rows_forward(x2, 1.0, 0.0, eps)
    xhat = (x2 - mean[:, None]) * invstd[:, None]
    g = dy2 * w2
    dx = invstd[:, None] * (g - g.mean(axis=1, keepdims=True)
                            - xhat * (g * xhat).mean(axis=1, keepdims=True))
    return dx, dy2 * xhat


def _per_channel(v, x, G):
    """A per-channel vector as (N * G, Cg * L) rows of x's group view."""
    N, C = x.shape[:2]
    L = x[0, 0].size
    return np.broadcast_to(np.asarray(v, np.float64).reshape(1, G, C // G, 1),
                           (N, G, C // G, L)).reshape(N * G, -1)


def ref_group_norm(x, G, w, b, eps=1e-5):
    """y, mean (N, G), var (N, G), invstd (N, G)."""
    N, C = x.shape[:2]
    x2 = x.astype(np.float64).reshape(N * G, -1)
    w = np.ones(C) if w is None else w
    b = np.zeros(C) if b is None else b
    y2, mean, var, invstd = _rows_forward(x2, _per_channel(w, x, G), _per_channel(b, x, G), eps)
    return y2.reshape(x.shape), mean.reshape(N, G), var.reshape(N, G), invstd.reshape(N, G)


def ref_group_norm_backward(dy, x, G, w, eps=1e-5):
    """dx, dweight, dbias."""
    N, C = x.shape[:2]
    x2 = x.astype(np.float64).reshape(N * G, -1)
    dy64 = dy.astype(np.float64)
    w = np.ones(C) if w is None else w
    dx2, dyxhat = _rows_backward(dy64.reshape(N * G, -1), x2, _per_channel(w, x, G), eps)
    axes = (0,) + tuple(range(2, x.ndim))
    return (dx2.reshape(x.shape), dyxhat.reshape(x.shape).sum(axis=axes),
            dy64.sum(axis=axes))


def ref_layer_norm(x, shape, w, b, eps=1e-5):
    """y, mean, var, invstd (the leading shape)."""
    lead = x.shape[:x.ndim - len(shape)]
    x2 = x.astype(np.float64).reshape(int(np.prod(lead)), -1)
    w2 = 1.0 if w is None else np.asarray(w, np.float64).reshape(1, -1)
    b2 = 0.0 if b is None else np.asarray(b, np.float64).reshape(1, -1)
    y2, mean, var, invstd = _rows_forward(x2, w2, b2, eps)
    return y2.reshape(x.shape), mean.reshape(lead), var.reshape(lead), invstd.reshape(lead)


def ref_layer_norm_backward(dy, x, shape, w, eps=1e-5):
    lead = x.shape[:x.ndim - len(shape)]
    R = int(np.prod(lead))
    x2 = x.astype(np.float64).reshape(R, -1)
    dy2 = dy.astype(np.float64).reshape(R, -1)
    w2 = 1.0 if w is None else np.asarray(w, np.float64).reshape(1, -1)
    dx2, dyxhat = _rows_backward(dy2, x2, w2, eps)
    return dx2.reshape(x.shape), dyxhat.sum(axis=0).reshape(shape), dy2.sum(axis=0).reshape(shape)


def ref_instance_running(rm, rv, x, momentum):
    """Running statistics after one step of instance statistics (PyTorch's rule)."""
    N, C = x.shape[:2]
    x3 = x.astype(np.float64).reshape(N, C, -1)
    L = x3.shape[2]
    mean = x3.mean(axis=(0, 2))
    unbiased = x3.var(axis=2).mean(axis=0) * L / (L - 1)
    return ((1 - momentum) * rm + momentum * mean, (1 - momentum) * rv + momentum * unbiased)


def _bshape(x):
    return (1, x.shape[1]) + (1,) * (x.ndim - 2)


def ref_batch_renorm(x, w, b, rm, rv, r_max, d_max, eps=1e-5):
    """Chainer's BatchRenormalization forward in float64: y, r, d (running statistics
    before the step)."""
    C = x.shape[1]
    w = np.ones(C) if w is None else np.asarray(w, np.float64)
    b = np.zeros(C) if b is None else np.asarray(b, np.float64)
    _, mean, var, invstd = ref_forward_train(x, np.ones(C), np.zeros(C), eps)
    sigma = np.sqrt(np.asarray(rv, np.float64) + eps)
    r = np.clip(np.sqrt(var + eps) / sigma, 1 / r_max, r_max)
    d = np.clip((mean - np.asarray(rm, np.float64)) / sigma, -d_max, d_max)
    bs = _bshape(x)
    xhat = (x.astype(np.float64) - mean.reshape(bs)) * invstd.reshape(bs)
    return (w.reshape(bs) * (xhat * r.reshape(bs) + d.reshape(bs)) + b.reshape(bs)), r, d


def ref_batch_renorm_backward(dy, x, w, r, d, eps=1e-5):
    """dx, dweight, dbias with r and d constants."""
    C = x.shape[1]
    w = np.ones(C) if w is None else np.asarray(w, np.float64)
    dx, dw_bn, db = ref_backward_train(dy, x, w * r, eps)
    return dx, r * dw_bn + d * db, db


def ref_ghost_batch_norm(x, w, b, size, eps=1e-5):
    """y, and each ghost batch's (count, mean, unbiased variance)."""
    ys, stats = [], []
    for a in range(0, x.shape[0], size):
        xs = x[a:a + size]
        y, mean, var, _ = ref_forward_train(xs, w, b, eps)
        m = xs.size // xs.shape[1]
        ys.append(y)
        stats.append((len(xs), mean, var * m / (m - 1)))
    return np.concatenate(ys), stats
