"""The trainer's two small nets (``python -m fastbn train --model convnet|mlp``)."""
import numpy as np

from .. import nn

__all__ = ["convnet", "mlp"]


def convnet(image_shape, num_classes=10, bn=True):
    """Two conv blocks, [conv3x3 -> BatchNorm + ReLU (fused) -> maxpool 2], with 32 then
    64 channels, and a Linear head.

    Parameters
    ----------
    image_shape : (int, int, int)
        (channels, height, width) of one image; height and width of at least 4.
    num_classes : int, optional
        Outputs (default 10).
    bn : bool, optional
        With BatchNorm (default); False gives the convolutions biases and a plain ReLU.

    Returns
    -------
    fastbn.nn.Sequential
        Input (N, channels, height, width), output (N, num_classes) logits.
    """
    channels, height, width = image_shape
    layers = []
    for cin, cout in ((channels, 32), (32, 64)):
        layers.append(nn.Conv2d(cin, cout, 3, padding=1, bias=not bn))
        layers += [nn.BatchNormReLU2d(cout) if bn else nn.ReLU(), nn.MaxPool2d(2)]
    features = 64 * (height // 4) * (width // 4)
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(features, num_classes))


def mlp(image_shape, num_classes=10, bn=True, hidden=256):
    """Flatten, then two hidden layers [Linear -> BatchNorm + ReLU (fused)], then Linear.

    Parameters
    ----------
    image_shape : tuple of int
        The shape of one input sample (it is flattened).
    num_classes : int, optional
        Outputs (default 10).
    bn : bool, optional
        With BatchNorm (default); False gives the hidden layers biases and a plain ReLU.
    hidden : int, optional
        Units per hidden layer.

    Returns
    -------
    fastbn.nn.Sequential
        Input (N, *image_shape), output (N, num_classes) logits.
    """
    layers, features = [nn.Flatten()], int(np.prod(image_shape))
    for _ in range(2):
        layers.append(nn.Linear(features, hidden, bias=not bn))
        layers.append(nn.BatchNormReLU1d(hidden) if bn else nn.ReLU())
        features = hidden
    return nn.Sequential(*layers, nn.Linear(features, num_classes))
