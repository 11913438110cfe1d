"""Small batch-normalized networks to train on a CPU, each with the state_dict keys of
the PyTorch definition it follows, so that weights move between the two both ways.

- :func:`resnet20`: CIFAR ResNet-20 (akamaster/pytorch_resnet_cifar10), 0.27M parameters;
- :func:`resnet18`: CIFAR ResNet-18 (kuangliu/pytorch-cifar), 11.2M parameters;
- :func:`inception_bn`: the BN paper's BN-Inception scaled down for 28x28 images;
- :func:`convnet`, :func:`mlp`: the trainer's small nets.

``python -m fastbn train --model NAME`` trains any of them on the embedded digits or
MNIST.
"""
from .inception import INCEPTION_MODULES, BasicConv2d, Inception, InceptionBN, inception_bn
from .presets import convnet, mlp
from .resnet import BasicBlock, ResNet, resnet18, resnet20

__all__ = ["resnet20", "resnet18", "inception_bn", "convnet", "mlp", "ResNet", "BasicBlock",
           "InceptionBN", "Inception", "BasicConv2d", "INCEPTION_MODULES"]
