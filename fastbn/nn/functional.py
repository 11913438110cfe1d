"""The ops of the tape, with ``torch.nn.functional``'s names and signatures.

Each is defined once, as a forward/backward pair, in ``fastbn._ops``; this
module is their public face.
"""
from .._ops import (adaptive_avg_pool2d, add, avg_pool2d, batch_norm, batch_norm_relu,
                    conv2d, cross_entropy, div, dropout, exp, flatten, getitem, leaky_relu,
                    linear, log, log_softmax, manual_seed, matmul, max_pool2d, mean, mse_loss,
                    mul, neg, pow, relu, reshape, sigmoid, softmax, sub, sum, tanh, transpose)

__all__ = [
    "add", "sub", "mul", "div", "neg", "pow", "matmul", "exp", "log",
    "sum", "mean", "reshape", "transpose", "getitem", "flatten",
    "relu", "sigmoid", "tanh", "leaky_relu", "softmax", "log_softmax",
    "linear", "batch_norm", "batch_norm_relu", "conv2d", "max_pool2d", "avg_pool2d",
    "adaptive_avg_pool2d", "cross_entropy", "mse_loss", "dropout", "manual_seed",
]
