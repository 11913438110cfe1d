"""Folding BatchNorm into the Conv2d or Linear layer before it, for inference."""
import collections
import copy

import numpy as np

from .. import functional as F
from ..batchnorm import BatchNorm1d, BatchNorm2d, _BatchNorm
from ..module import Module, Parameter, Sequential
from ..modules import Conv2d, Linear
from ..syncbatchnorm import SyncBatchNorm

__all__ = ["fold_batch_norm", "FoldedBatchNorm"]

# layer type -> (the dimensions of its output that a BatchNorm normalizes over its output
# channels, the BatchNorm types that accept that input).  A Linear's 3-D output (N, L, out)
# would be normalized over L, not over its features, so only 2-D input folds there.
_PAIRS = {Conv2d: (4, (BatchNorm2d, SyncBatchNorm)), Linear: (2, (BatchNorm1d, SyncBatchNorm))}


class FoldedBatchNorm(Module):
    """What :func:`fold_batch_norm` leaves in place of a BatchNorm it folded into the layer
    before it: the ReLU of a BatchNormReLU1d/2d, and the BatchNorm's check of its input.

    Parameters
    ----------
    ndim : int
        The number of dimensions the input must have (4 after a Conv2d, 2 after a Linear:
        the folded scale and shift are per output channel of that layer, which is axis 1
        only then).
    relu : bool
        Apply ReLU (the folded layer was a BatchNormReLU1d/2d).

    Raises
    ------
    ValueError
        On input of another number of dimensions, where the folded model would compute
        something other than the model it came from.
    """

    def __init__(self, ndim, relu=False):
        super().__init__()
        self.ndim = int(ndim)
        self.relu = bool(relu)

    def forward(self, input):
        shape = np.shape(input.data if hasattr(input, "data") else input)
        if len(shape) != self.ndim:
            raise ValueError(f"{self._layer_name()}: the BatchNorm folded here normalized "
                             f"{self.ndim}-D input over its channels, got {len(shape)}-D "
                             f"input of shape {shape}")
        return F.relu(input) if self.relu else input

    def extra_repr(self):
        return f"ndim={self.ndim}" + (", relu=True" if self.relu else "")


def _fold(layer, bn):
    """Scale layer's output channels by bn's inverse std (times its weight) and shift them,
    so that layer alone computes bn(layer(x)) in eval mode.  New Parameters: a weight
    tied to another layer stays as it is there."""
    w = layer.weight.data
    invstd = 1.0 / np.sqrt(bn.running_var.astype(np.float64) + bn.eps)
    scale = invstd * (1.0 if bn.weight is None else bn.weight.data)
    # BatchNorm(..., bias=False) has a weight and no bias
    shift = (0.0 if bn.bias is None else bn.bias.data) - bn.running_mean * scale
    bias = 0.0 if layer.bias is None else layer.bias.data.astype(np.float64)
    layer.weight = Parameter((w * scale.reshape((-1,) + (1,) * (w.ndim - 1))).astype(w.dtype))
    layer.bias = Parameter((bias * scale + shift).astype(w.dtype))


def _foldable(layer, bn, uses):
    """Whether bn, applied to layer's output, folds into layer exactly."""
    if type(layer) not in _PAIRS or uses[id(layer)] != 1:  # a shared layer runs elsewhere too
        return False
    ndim, bn_types = _PAIRS[type(layer)]
    return (isinstance(bn, bn_types) and type(bn).forward in (_BatchNorm.forward,
                                                              SyncBatchNorm.forward)
            and bn.track_running_stats and bn.num_features == layer.weight.shape[0])


def fold_batch_norm(model):
    """An inference copy of model in which BatchNorms are folded into the Conv2d or Linear
    layer before them.

    A pair is folded only where the data provably flows from the layer straight into the
    BatchNorm: the two are consecutive children of a :class:`~fastbn.nn.Sequential` (one
    that does not override ``forward``), anywhere in the model, or a pair of children that
    a Module's class declares in ``fold_pairs``, a sequence of (layer name, BatchNorm
    name): its author's word that its ``forward`` feeds the layer's output to the
    BatchNorm alone (fastbn.models' ResNet blocks and Inception units do).  The layer's
    weight and
    bias (it gains one if it had none) then compute ``bn(layer(x))`` of eval mode, and a
    :class:`FoldedBatchNorm` takes the BatchNorm's place: it keeps the ReLU of a
    BatchNormReLU1d/2d and the BatchNorm's check of the input's dimensions.

    Everything else is left as it is, so the copy computes what model computes in eval
    mode, to rounding:

    - a BatchNorm whose order relative to a layer only a custom ``forward`` knows (two
      attributes of a custom Module are not folded, whatever their registration order,
      unless its class lists them in ``fold_pairs``);
    - a BatchNorm after anything but a plain Conv2d (BatchNorm2d) or Linear (BatchNorm1d),
      e.g. after a ReLU, a pooling layer or a subclass of Conv2d;
    - a BatchNorm without running statistics (``track_running_stats=False``);
    - a layer that appears more than once in the model (shared weights).

    Parameters
    ----------
    model : Module
        Left unchanged (deep-copied).

    Returns
    -------
    Module
        The folded copy, in eval mode.
    """
    folded = copy.deepcopy(model).eval()
    uses = collections.Counter(id(m) for _, m in folded.named_modules())
    for module in list(folded.modules()):
        if isinstance(module, Sequential) and type(module).forward is Sequential.forward:
            children = list(module._modules.items())  # None entries too: they break adjacency
            pairs = [(layer, name) for (_, layer), (name, _) in zip(children, children[1:])]
        else:
            pairs = [(module._modules.get(a), b)
                     for a, b in getattr(type(module), "fold_pairs", ())]
        for layer, name in pairs:
            bn = module._modules.get(name)
            if layer is not None and bn is not None and _foldable(layer, bn, uses):
                _fold(layer, bn)
                module.add_module(name, FoldedBatchNorm(_PAIRS[type(layer)][0], bn._relu))
    return folded
