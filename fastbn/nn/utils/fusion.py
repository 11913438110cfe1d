"""Folding BatchNorm into the layer before it, for inference."""
import copy

import numpy as np

from ..batchnorm import _BatchNorm
from ..module import Identity, Parameter
from ..modules import Conv2d, Linear

__all__ = ["fold_batch_norm"]


def _fold(layer, bn):
    """Scale layer's output channels by bn's inverse std (times its weight) and shift them,
    so that layer alone computes bn(layer(x)) in eval mode."""
    w = layer.weight.data
    invstd = 1.0 / np.sqrt(bn.running_var.astype(np.float64) + bn.eps)
    scale = invstd * (bn.weight.data if bn.affine else 1.0)
    shift = (bn.bias.data if bn.affine else 0.0) - bn.running_mean * scale
    bias = 0.0 if layer.bias is None else layer.bias.data.astype(np.float64)
    layer.weight = Parameter((w * scale.reshape((-1,) + (1,) * (w.ndim - 1))).astype(w.dtype))
    layer.bias = Parameter((bias * scale + shift).astype(w.dtype))


def fold_batch_norm(model):
    """An inference copy of model (in eval mode) in which every BatchNorm that directly
    follows a Conv2d or Linear inside a container is folded into that layer's weight and
    bias (the layer gains a bias if it had none) and replaced by Identity.  BatchNorms
    without running statistics (track_running_stats=False) stay.  model is unchanged."""
    folded = copy.deepcopy(model).eval()
    for module in list(folded.modules()):
        children = list(module.named_children())
        for (_, prev), (name, child) in zip(children, children[1:]):
            if (isinstance(child, _BatchNorm) and child.track_running_stats
                    and isinstance(prev, (Conv2d, Linear))
                    and child.num_features == prev.weight.shape[0]):
                _fold(prev, child)
                setattr(module, name, Identity())
    return folded
