"""The ops of the tape, with ``torch.nn.functional``'s names and signatures.

Each is defined once, as a forward/backward pair, in ``fastbn._ops``; this
module is their public face.
"""
from .._ops import (absolute, adaptive_avg_pool2d, add, add_relu, argmax, argmin, avg_pool2d,
                    batch_norm, batch_norm_relu, batch_renorm, cat, clone, conv2d,
                    cross_entropy, div, dropout, eq, exp, flatten, ge, getitem,
                    ghost_batch_norm, group_norm, gt, instance_norm, layer_norm, le,
                    leaky_relu, linear, log, log_softmax, lt, manual_seed, matmul, max_pool2d,
                    maximum, mean, minimum, mse_loss, mul, ne, neg, nll_loss, pad, pow, relu,
                    reshape, sigmoid, softmax, sqrt, squeeze, stack, sub, sum, tanh,
                    transpose, unsqueeze)

__all__ = [
    "add", "sub", "mul", "div", "neg", "pow", "matmul", "exp", "log", "sqrt", "absolute",
    "maximum", "minimum",
    "sum", "mean", "argmax", "argmin",
    "eq", "ne", "lt", "le", "gt", "ge",
    "reshape", "transpose", "getitem", "flatten", "unsqueeze", "squeeze", "cat", "stack",
    "pad", "clone",
    "relu", "add_relu", "sigmoid", "tanh", "leaky_relu", "softmax", "log_softmax",
    "linear", "batch_norm", "batch_norm_relu", "group_norm", "layer_norm", "instance_norm",
    "batch_renorm", "ghost_batch_norm", "conv2d", "max_pool2d", "avg_pool2d",
    "adaptive_avg_pool2d", "cross_entropy", "nll_loss", "mse_loss", "dropout", "manual_seed",
]
