"""A small Inception with Batch Normalization for 28x28 images: the BN-Inception of
Ioffe & Szegedy ("Batch Normalization: Accelerating Deep Network Training by Reducing
Internal Covariate Shift", 2015, Appendix, Figure 5), scaled down.

Its inception modules concatenate, on the channel axis, four branches: a 1x1
convolution, a 1x1 reduction then a 3x3 convolution, a 1x1 reduction then two 3x3
convolutions (where GoogLeNet had a 5x5), and a pooling (average or max, 3x3) followed
by a 1x1 projection.  The two modules that halve the image (3c, 4e) drop the 1x1 branch,
put stride 2 on the last convolution of the 3x3 branches and pass the max-pooled input
through unprojected.  Every convolution is followed by BatchNorm and the activation.

Scaled from the paper's 224x224 ImageNet network: every channel count divided by 4; a
3x3 first convolution instead of 7x7 stride 2; one max pool in the stem instead of two,
so that a 28x28 image enters module 3a at 14x14 (the paper's at 28x28); no auxiliary
classifiers (BN-Inception has none either).
"""
from .. import nn
from ..nn import functional as F
from ._common import check_bool, check_positive_int

__all__ = ["BasicConv2d", "Inception", "InceptionBN", "inception_bn"]

_ACTIVATIONS = {"relu": F.relu, "sigmoid": F.sigmoid}

# The modules: name, 1x1, 3x3 reduce, 3x3, double 3x3 reduce, double 3x3, pool,
# pool projection (0: pass-through), stride.  The paper's Figure 5 divided by 4.
INCEPTION_MODULES = (
    ("3a", 16, 16, 16, 16, 24, "avg", 8, 1),
    ("3b", 16, 16, 24, 16, 24, "avg", 16, 1),
    ("3c", 0, 32, 40, 16, 24, "max", 0, 2),
    ("4a", 56, 16, 24, 24, 32, "avg", 32, 1),
    ("4b", 48, 24, 32, 24, 32, "avg", 32, 1),
    ("4c", 40, 32, 40, 32, 40, "avg", 32, 1),
    ("4d", 24, 32, 48, 40, 48, "avg", 32, 1),
    ("4e", 0, 32, 48, 48, 64, "max", 0, 2),
    ("5a", 88, 48, 80, 40, 56, "avg", 32, 1),
    ("5b", 88, 48, 80, 48, 56, "max", 32, 1),
)


def _check_activation(activation):
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be 'relu' or 'sigmoid', got {activation!r}")
    return activation


class BasicConv2d(nn.Module):
    """A convolution, BatchNorm and the activation: the unit every layer of
    :class:`InceptionBN` is made of (``conv`` and ``bn`` keys, as torchvision's
    Inception's ``BasicConv2d``).

    Parameters
    ----------
    in_channels, out_channels : int
        Channels of the input and of the output.
    kernel_size : int
        Side of the square kernel.
    stride, padding : int, optional
        The convolution's (default 1 and 0).
    bn : bool, optional
        With BatchNorm (default).  False: no ``bn``, and the convolution has a bias.
    activation : {"relu", "sigmoid"}, optional
        With "relu" and BatchNorm, ``bn`` is the fused ``nn.BatchNormReLU2d`` (the same
        parameters, buffers and keys as ``nn.BatchNorm2d``).

    Raises
    ------
    ValueError
        For an unknown activation or invalid convolution arguments.
    """
    fold_pairs = (("conv", "bn"),)  # for nn.utils.fold_batch_norm

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bn=True,
                 activation="relu"):
        super().__init__()
        check_bool("bn", bn)
        self.activation = _check_activation(activation)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding,
                              bias=not bn)
        fused = bn and activation == "relu"
        self.bn = ((nn.BatchNormReLU2d if fused else nn.BatchNorm2d)(out_channels) if bn
                   else None)
        self._act = None if fused else _ACTIVATIONS[activation]

    def forward(self, x):
        """(N, in_channels, H, W) -> (N, out_channels, OH, OW), x's dtype."""
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return x if self._act is None else self._act(x)

    def extra_repr(self):
        return f"activation={self.activation!r}"


class Inception(nn.Module):
    """An inception module of BN-Inception: four branches concatenated on the channels.

    Branches (state_dict prefixes): ``branch1x1`` (1x1); ``branch3x3_1`` (1x1
    reduction), ``branch3x3_2`` (3x3); ``branch3x3dbl_1`` (1x1 reduction),
    ``branch3x3dbl_2``, ``branch3x3dbl_3`` (3x3 each); a 3x3 pooling and
    ``branch_pool`` (1x1 projection).  With stride 2 the last 3x3 convolution of each
    3x3 branch and the pooling have stride 2.

    Parameters
    ----------
    in_channels : int
        Channels of the input.
    ch1x1 : int
        Channels of the 1x1 branch; 0 leaves it out.
    ch3x3red, ch3x3 : int
        The 3x3 branch's reduction and output channels.
    ch3x3dblred, ch3x3dbl : int
        The double-3x3 branch's reduction and output channels.
    pool : {"avg", "max"}
        The pooling branch's pooling (3x3, padding 1; average counts the padding).
    pool_proj : int
        Channels of the projection after the pooling; 0: the pooled input passes
        through with its ``in_channels`` channels.
    stride : {1, 2}, optional
        2 halves the image (the output has ceil(H / 2) x ceil(W / 2) pixels).
    bn : bool, optional
        With BatchNorm after every convolution (default).
    activation : {"relu", "sigmoid"}, optional
        The nonlinearity of every unit (:class:`BasicConv2d`).

    Attributes
    ----------
    out_channels : int
        ``ch1x1 + ch3x3 + ch3x3dbl + (pool_proj or in_channels)``.

    Raises
    ------
    ValueError
        For a bad channel count, pooling, stride or activation.
    """

    def __init__(self, in_channels, ch1x1, ch3x3red, ch3x3, ch3x3dblred, ch3x3dbl, pool,
                 pool_proj, stride=1, bn=True, activation="relu"):
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        if stride not in (1, 2) or isinstance(stride, bool):
            raise ValueError(f"stride must be 1 or 2, got {stride!r}")
        for name, value in (("ch1x1", ch1x1), ("pool_proj", pool_proj)):
            if value:
                check_positive_int(name, value)
            elif isinstance(value, bool) or value != 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")

        def unit(cin, cout, k, s=1):
            return BasicConv2d(cin, cout, k, s, k // 2, bn, activation)

        self.branch1x1 = unit(in_channels, ch1x1, 1, stride) if ch1x1 else None
        self.branch3x3_1 = unit(in_channels, ch3x3red, 1)
        self.branch3x3_2 = unit(ch3x3red, ch3x3, 3, stride)
        self.branch3x3dbl_1 = unit(in_channels, ch3x3dblred, 1)
        self.branch3x3dbl_2 = unit(ch3x3dblred, ch3x3dbl, 3)
        self.branch3x3dbl_3 = unit(ch3x3dbl, ch3x3dbl, 3, stride)
        self.pool = pool
        self.stride = stride
        self.branch_pool = unit(in_channels, pool_proj, 1) if pool_proj else None
        self.out_channels = ch1x1 + ch3x3 + ch3x3dbl + (pool_proj or in_channels)

    def forward(self, x):
        """(N, in_channels, H, W) -> (N, out_channels, H / stride, W / stride) (rounded
        up), x's dtype."""
        outs = [] if self.branch1x1 is None else [self.branch1x1(x)]
        outs.append(self.branch3x3_2(self.branch3x3_1(x)))
        outs.append(self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))))
        pooling = F.avg_pool2d if self.pool == "avg" else F.max_pool2d
        pooled = pooling(x, 3, self.stride, 1)
        outs.append(pooled if self.branch_pool is None else self.branch_pool(pooled))
        return F.cat(outs, 1)

    def extra_repr(self):
        return f"pool={self.pool!r}, stride={self.stride}, out_channels={self.out_channels}"


class InceptionBN(nn.Module):
    """BN-Inception (Ioffe & Szegedy 2015, Figure 5) scaled down for 28x28 images.

    Layers, with the sizes of a 28x28 input (every convolution: conv, BatchNorm,
    activation; "#3x3 red." is a 1x1 reduction before the 3x3s):

    ==============  ======  ===========  =====  ========  =====  ========  ==========  =========
    layer           stride  output       #1x1   #3x3 red  #3x3   dbl red   double 3x3  pool
    ==============  ======  ===========  =====  ========  =====  ========  ==========  =========
    conv1 3x3       1       16x28x28                      16
    maxpool1 3x3    2       16x14x14
    conv2 1x1       1       16x14x14     16
    conv3 3x3       1       48x14x14                      48
    inception3a     1       64x14x14     16     16        16     16        24          avg + 8
    inception3b     1       80x14x14     16     16        24     16        24          avg + 16
    inception3c     2       144x7x7      0      32        40     16        24          max, pass
    inception4a     1       144x7x7      56     16        24     24        32          avg + 32
    inception4b     1       144x7x7      48     24        32     24        32          avg + 32
    inception4c     1       152x7x7      40     32        40     32        40          avg + 32
    inception4d     1       152x7x7      24     32        48     40        48          avg + 32
    inception4e     2       264x4x4      0      32        48     48        64          max, pass
    inception5a     1       256x4x4      88     48        80     40        56          avg + 32
    inception5b     1       256x4x4      88     48        80     48        56          max + 32
    avg pool        global  256x1x1
    dropout, fc             num_classes
    ==============  ======  ===========  =====  ========  =====  ========  ==========  =========

    "avg + 8": a 3x3 average pooling (stride 1) then a 1x1 projection to 8 channels;
    "max, pass": a 3x3 max pooling (stride 2) whose output passes through unprojected.

    Parameters start as PyTorch's defaults for each layer.  Any image size fits (the
    8x8 digits reach module 5b at 1x1).

    Parameters
    ----------
    in_channels : int, optional
        Channels of the input images (default 1: MNIST, the digits).
    num_classes : int, optional
        Outputs of ``fc`` (default 10).
    bn : bool, optional
        With BatchNorm after every convolution (default); False leaves every BatchNorm
        out and gives the convolutions biases (the paper's "Inception" baseline).
    activation : {"relu", "sigmoid"}, optional
        The nonlinearity after every BatchNorm (default "relu"; the paper's
        "BN-x5-Sigmoid" uses "sigmoid").
    dropout : float, optional
        Dropout probability before ``fc`` (default 0.0: BN-Inception removed the
        dropout GoogLeNet had, which was 0.4).

    Raises
    ------
    ValueError
        For an unknown activation, a dropout outside [0, 1] or counts that are not
        positive ints.

    Notes
    -----
    Input: (N, in_channels, H, W) float32 or float64; output (N, num_classes) logits.
    """

    def __init__(self, in_channels=1, num_classes=10, bn=True, activation="relu",
                 dropout=0.0):
        super().__init__()
        check_bool("bn", bn)
        _check_activation(activation)
        self.conv1 = BasicConv2d(in_channels, 16, 3, padding=1, bn=bn, activation=activation)
        self.maxpool1 = nn.MaxPool2d(3, 2, 1)
        self.conv2 = BasicConv2d(16, 16, 1, bn=bn, activation=activation)
        self.conv3 = BasicConv2d(16, 48, 3, padding=1, bn=bn, activation=activation)
        channels = 48
        self.module_names = []
        for name, *widths, pool, proj, stride in INCEPTION_MODULES:
            module = Inception(channels, *widths, pool, proj, stride, bn, activation)
            setattr(self, f"inception{name}", module)
            self.module_names.append(f"inception{name}")
            channels = module.out_channels
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, check_positive_int("num_classes", num_classes))

    def forward(self, x):
        """(N, in_channels, H, W) float32 or float64 -> (N, num_classes) logits."""
        x = self.conv3(self.conv2(self.maxpool1(self.conv1(x))))
        for name in self.module_names:
            x = getattr(self, name)(x)
        x = F.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(self.dropout(x))


def inception_bn(in_channels=1, num_classes=10, bn=True, activation="relu", dropout=0.0):
    """The small BN-Inception, :class:`InceptionBN`.

    Parameters
    ----------
    in_channels : int, optional
        Channels of the input images (default 1).
    num_classes : int, optional
        Outputs (default 10).
    bn : bool, optional
        With BatchNorm after every convolution (default).
    activation : {"relu", "sigmoid"}, optional
        The nonlinearity after every BatchNorm (default "relu").
    dropout : float, optional
        Dropout probability before the classifier (default 0.0: none).

    Returns
    -------
    InceptionBN
        647,146 parameters for 1 input channel and 10 classes.
    """
    return InceptionBN(in_channels, num_classes, bn, activation, dropout)
