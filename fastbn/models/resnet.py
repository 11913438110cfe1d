"""Residual networks for small images (He et al., "Deep Residual Learning for Image
Recognition", 2016, section 4.2), with the state_dict keys of the PyTorch definitions
they follow, so that weights move between the two both ways:

- ``resnet20``: the CIFAR-10 ResNet-20 of Yerlan Idelbayev's widely used
  akamaster/pytorch_resnet_cifar10 (``resnet.py``): 3 stages of 3 BasicBlocks with 16,
  32 and 64 channels, shortcut option A (parameter-free: subsampled input, zero-padded
  channels), Kaiming-normal initialization; 0.27M parameters.
- ``resnet18``: the CIFAR ResNet-18 of kuangliu/pytorch-cifar (``models/resnet.py``):
  4 stages of 2 BasicBlocks with 64-512 channels, 1x1 stride-2 convolution + BN
  shortcuts (option B), PyTorch's default initialization; 11.2M parameters.

Both end in a global average pool, so they take any image size of at least the product
of their strides (1x8x8 digits, 1x28x28 MNIST, 3x32x32 CIFAR); on 32x32 images that pool
is the definitions' ``avg_pool2d``.  A BatchNorm followed by a ReLU with nothing between
them is one fused ``BatchNormReLU2d`` (same parameters, buffers and state_dict keys as
``BatchNorm2d``).
"""
from .. import nn
from ..nn import functional as F
from ._common import check_bool, check_positive_int, norm_relu

__all__ = ["BasicBlock", "ResNet", "resnet20", "resnet18"]

_SHORTCUTS = ("A", "B")


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a shortcut: ``relu(bn2(conv2(relu(bn1(conv1(x))))) +
    shortcut(x))``, as in both definitions that :class:`ResNet` follows.

    Parameters
    ----------
    in_planes : int
        Input channels.
    planes : int
        Output channels.
    stride : int, optional
        Stride of ``conv1`` (2 halves the image).
    shortcut : {"B", "A"}, optional
        Where the block changes the shape: "B" a 1x1 convolution (stride ``stride``)
        followed by BatchNorm, the ``shortcut.0`` / ``shortcut.1`` keys; "A" the input
        subsampled by ``stride`` and zero-padded to ``planes`` channels (no parameters).
        Elsewhere the shortcut is the identity.
    bn : bool, optional
        With BatchNorm (default).  False leaves out every BatchNorm and gives the
        convolutions biases instead.

    Raises
    ------
    ValueError
        For channel counts or a stride that are not positive ints, an unknown shortcut,
        or option "A" with ``planes - in_planes`` odd.
    """
    expansion = 1
    fold_pairs = (("conv1", "bn1"), ("conv2", "bn2"))  # for nn.utils.fold_batch_norm

    def __init__(self, in_planes, planes, stride=1, shortcut="B", bn=True):
        super().__init__()
        check_positive_int("stride", stride)
        if shortcut not in _SHORTCUTS:
            raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}")
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=not bn)
        self.bn1 = norm_relu(planes, bn)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=not bn)
        self.bn2 = nn.BatchNorm2d(planes) if bn else None
        if stride == 1 and in_planes == planes:
            self.shortcut = nn.Sequential()
        elif shortcut == "A":
            self.shortcut = _SubsamplePad(in_planes, planes, stride)
        else:
            layers = [nn.Conv2d(in_planes, planes, 1, stride, bias=not bn)]
            self.shortcut = nn.Sequential(*layers, *([nn.BatchNorm2d(planes)] if bn else []))

    def forward(self, x):
        """(N, in_planes, H, W) -> (N, planes, H / stride, W / stride) (rounded up)."""
        out = self.conv1(x)
        out = F.relu(out) if self.bn1 is None else self.bn1(out)
        out = self.conv2(out)
        if self.bn2 is not None:
            out = self.bn2(out)
        return F.add_relu(out, self.shortcut(x))


class _SubsamplePad(nn.Module):
    """Option A's shortcut (akamaster's ``LambdaLayer``): ``x[:, :, ::s, ::s]`` with
    (planes - in_planes) / 2 zero channels on each side."""

    def __init__(self, in_planes, planes, stride):
        super().__init__()
        if (planes - in_planes) % 2 or planes < in_planes:
            raise ValueError(f"shortcut 'A' pads channels evenly on both sides: it cannot go "
                             f"from {in_planes} to {planes} channels")
        self.stride, self.pad = stride, (planes - in_planes) // 2

    def forward(self, x):
        s = self.stride
        x = x[:, :, ::s, ::s]
        return F.pad(x, (0, 0, 0, 0, self.pad, self.pad)) if self.pad else x

    def extra_repr(self):
        return f"stride={self.stride}, pad={self.pad}"


class ResNet(nn.Module):
    """A ResNet of :class:`BasicBlock` stages for small images: a 3x3 convolution
    (stride 1) with BatchNorm and ReLU, one stage per width (the first at stride 1, the
    others halving the image), a global average pool and a Linear layer.

    State_dict keys: ``conv1``, ``bn1``, ``layer1`` ... ``layerK`` (``layerI.J.conv1``,
    ``.bn1``, ``.conv2``, ``.bn2``, ``.shortcut``), ``linear``: those of the two PyTorch
    definitions named in this module's docstring.

    Parameters
    ----------
    num_blocks : sequence of int
        Blocks per stage.
    widths : sequence of int
        Channels per stage (as many as ``num_blocks``).
    in_channels : int, optional
        Channels of the input images (default 3).
    num_classes : int, optional
        Outputs of the Linear layer (default 10).
    shortcut : {"B", "A"}, optional
        The shortcut of the blocks that change the shape (see :class:`BasicBlock`).
    bn : bool, optional
        With BatchNorm (default); False gives the convolutions biases instead.

    Raises
    ------
    ValueError
        For counts that are not positive ints or sequences of unequal length.

    Notes
    -----
    Input: (N, in_channels, H, W) float32 or float64; output (N, num_classes) logits.
    """
    fold_pairs = (("conv1", "bn1"),)  # for nn.utils.fold_batch_norm

    def __init__(self, num_blocks, widths, in_channels=3, num_classes=10, shortcut="B",
                 bn=True):
        super().__init__()
        num_blocks, widths = tuple(num_blocks), tuple(widths)
        if not num_blocks or len(num_blocks) != len(widths):
            raise ValueError(f"num_blocks {num_blocks} and widths {widths} must be non-empty "
                             "and of the same length")
        for name, values in (("num_blocks", num_blocks), ("widths", widths)):
            for v in values:
                check_positive_int(name, v)
        check_bool("bn", bn)
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=not bn)
        self.bn1 = norm_relu(widths[0], bn)
        planes = widths[0]
        for i, (n, width) in enumerate(zip(num_blocks, widths)):
            blocks = []
            for j in range(n):
                stride = 2 if i and not j else 1
                blocks.append(BasicBlock(planes, width, stride, shortcut, bn))
                planes = width * BasicBlock.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.num_stages = len(widths)
        self.linear = nn.Linear(planes, check_positive_int("num_classes", num_classes))

    def forward(self, x):
        """(N, in_channels, H, W) float32 or float64 -> (N, num_classes) logits."""
        out = self.conv1(x)
        out = F.relu(out) if self.bn1 is None else self.bn1(out)
        for i in range(self.num_stages):
            out = getattr(self, f"layer{i + 1}")(out)
        out = F.adaptive_avg_pool2d(out, 1)
        return self.linear(F.flatten(out, 1))


def resnet20(in_channels=3, num_classes=10, bn=True):
    """ResNet-20 for CIFAR-10 (He et al. 2016, section 4.2: n = 3), as
    akamaster/pytorch_resnet_cifar10's ``resnet20()``: 16/32/64 channels, shortcut
    option A, Kaiming-normal weights (fan in) for the convolutions and the Linear layer.

    Parameters
    ----------
    in_channels : int, optional
        Channels of the input images (3: CIFAR; 1: MNIST or the digits).
    num_classes : int, optional
    bn : bool, optional
        With BatchNorm (default); False gives the convolutions biases instead.

    Returns
    -------
    ResNet
        269,722 parameters for 3 input channels and 10 classes.
    """
    model = ResNet((3, 3, 3), (16, 32, 64), in_channels, num_classes, shortcut="A", bn=bn)
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight)
    return model


def resnet18(in_channels=3, num_classes=10, bn=True):
    """The CIFAR ResNet-18 of kuangliu/pytorch-cifar's ``ResNet18()``: 64/128/256/512
    channels, 2 blocks per stage, 1x1 stride-2 convolution + BatchNorm shortcuts,
    PyTorch's default initialization.

    Parameters
    ----------
    in_channels : int, optional
        Channels of the input images (3: CIFAR; 1: MNIST or the digits).
    num_classes : int, optional
    bn : bool, optional
        With BatchNorm (default); False gives the convolutions biases instead.

    Returns
    -------
    ResNet
        11,173,962 parameters for 3 input channels and 10 classes.
    """
    return ResNet((2, 2, 2, 2), (64, 128, 256, 512), in_channels, num_classes, shortcut="B",
                  bn=bn)
