"""PyTorch definitions of the nets that fastbn.models follows, written from the published
sources with PyTorch's own layers: the oracle of tests/test_models.py and the PyTorch
side of benchmarks/bench_train.py.  Needs torch (the importer skips without it).

- resnet20: akamaster/pytorch_resnet_cifar10, resnet.py (option A shortcuts,
  kaiming_normal_ init), with an in_channels argument;
- resnet18: kuangliu/pytorch-cifar, models/resnet.py, with an in_channels argument;
- InceptionBN: the BN-Inception table of fastbn.models.InceptionBN's docstring, written
  plainly (BatchNorm2d then the activation: no fused layer).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.nn.init as init


# --------------------------------------------------------------- akamaster ResNet-20
def _weights_init(m):
    if isinstance(m, (nn.Linear, nn.Conv2d)):
        init.kaiming_normal_(m.weight)


class LambdaLayer(nn.Module):
    def __init__(self, lambd):
        super().__init__()
        self.lambd = lambd

    def forward(self, x):
        return self.lambd(x)


class CifarBasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1, option="A"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1,
                               bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            if option == "A":
                self.shortcut = LambdaLayer(lambda x: F.pad(
                    x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4), "constant", 0))
            elif option == "B":
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_planes, self.expansion * planes, kernel_size=1, stride=stride,
                              bias=False),
                    nn.BatchNorm2d(self.expansion * planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return F.relu(out)


class CifarResNet(nn.Module):
    def __init__(self, block, num_blocks, num_classes=10, in_channels=3):
        super().__init__()
        self.in_planes = 16
        self.conv1 = nn.Conv2d(in_channels, 16, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._make_layer(block, 16, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(block, 32, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(block, 64, num_blocks[2], stride=2)
        self.linear = nn.Linear(64, num_classes)
        self.apply(_weights_init)

    def _make_layer(self, block, planes, num_blocks, stride):
        strides = [stride] + [1] * (num_blocks - 1)
        layers = []
        for stride in strides:
            layers.append(block(self.in_planes, planes, stride))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer1(out)
        out = self.layer2(out)
        out = self.layer3(out)
        out = F.avg_pool2d(out, out.size()[3])
        out = out.view(out.size(0), -1)
        return self.linear(out)


def resnet20(in_channels=3, num_classes=10):
    return CifarResNet(CifarBasicBlock, [3, 3, 3], num_classes, in_channels)


# --------------------------------------------------------------- kuangliu ResNet-18
class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1,
                               bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != self.expansion * planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, self.expansion * planes, kernel_size=1, stride=stride,
                          bias=False),
                nn.BatchNorm2d(self.expansion * planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return F.relu(out)


class ResNet(nn.Module):
    def __init__(self, block, num_blocks, num_classes=10, in_channels=3):
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(block, 64, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(block, 128, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(block, 256, num_blocks[2], stride=2)
        self.layer4 = self._make_layer(block, 512, num_blocks[3], stride=2)
        self.linear = nn.Linear(512 * block.expansion, num_classes)

    def _make_layer(self, block, planes, num_blocks, stride):
        strides = [stride] + [1] * (num_blocks - 1)
        layers = []
        for stride in strides:
            layers.append(block(self.in_planes, planes, stride))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer1(out)
        out = self.layer2(out)
        out = self.layer3(out)
        out = self.layer4(out)
        out = F.avg_pool2d(out, 4)
        out = out.view(out.size(0), -1)
        return self.linear(out)


def resnet18(in_channels=3, num_classes=10):
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes, in_channels)


# --------------------------------------------------------------- small BN-Inception
class BasicConv2d(nn.Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, bn=True,
                 activation="relu"):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride,
                              kernel_size // 2, bias=not bn)
        self.bn = nn.BatchNorm2d(out_channels) if bn else None
        self.act = torch.relu if activation == "relu" else torch.sigmoid

    def forward(self, x):
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return self.act(x)


class Inception(nn.Module):
    def __init__(self, in_channels, ch1x1, ch3x3red, ch3x3, dblred, dbl, pool, proj, stride,
                 bn, activation):
        super().__init__()

        def unit(cin, cout, k, s=1):
            return BasicConv2d(cin, cout, k, s, bn, activation)

        self.branch1x1 = unit(in_channels, ch1x1, 1, stride) if ch1x1 else None
        self.branch3x3_1 = unit(in_channels, ch3x3red, 1)
        self.branch3x3_2 = unit(ch3x3red, ch3x3, 3, stride)
        self.branch3x3dbl_1 = unit(in_channels, dblred, 1)
        self.branch3x3dbl_2 = unit(dblred, dbl, 3)
        self.branch3x3dbl_3 = unit(dbl, dbl, 3, stride)
        self.pool = nn.AvgPool2d(3, stride, 1) if pool == "avg" else nn.MaxPool2d(3, stride, 1)
        self.branch_pool = unit(in_channels, proj, 1) if proj else None
        self.out_channels = ch1x1 + ch3x3 + dbl + (proj or in_channels)

    def forward(self, x):
        outs = [] if self.branch1x1 is None else [self.branch1x1(x)]
        outs.append(self.branch3x3_2(self.branch3x3_1(x)))
        outs.append(self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))))
        pooled = self.pool(x)
        outs.append(pooled if self.branch_pool is None else self.branch_pool(pooled))
        return torch.cat(outs, 1)


# name, 1x1, 3x3 reduce, 3x3, double 3x3 reduce, double 3x3, pool, projection, stride
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


class InceptionBN(nn.Module):
    def __init__(self, in_channels=1, num_classes=10, bn=True, activation="relu", dropout=0.0):
        super().__init__()
        self.conv1 = BasicConv2d(in_channels, 16, 3, bn=bn, activation=activation)
        self.maxpool1 = nn.MaxPool2d(3, 2, 1)
        self.conv2 = BasicConv2d(16, 16, 1, bn=bn, activation=activation)
        self.conv3 = BasicConv2d(16, 48, 3, bn=bn, activation=activation)
        channels, blocks = 48, []
        for name, *widths, pool, proj, stride in INCEPTION_MODULES:
            block = Inception(channels, *widths, pool, proj, stride, bn, activation)
            setattr(self, f"inception{name}", block)
            blocks.append(block)
            channels = block.out_channels
        self.blocks = blocks  # a plain list: no second set of state_dict keys
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x):
        x = self.conv3(self.conv2(self.maxpool1(self.conv1(x))))
        for block in self.blocks:
            x = block(x)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(self.dropout(x))
