"""Neural-network building blocks: layers, initialization, model utilities;
``fastbn.nn.functional`` holds the ops."""
from . import functional, init, utils
from .batchnorm import BatchNorm1d, BatchNorm2d, BatchNormReLU1d, BatchNormReLU2d
from .syncbatchnorm import SyncBatchNorm
from .module import Identity, Module, ModuleDict, ModuleList, Parameter, Sequential
from .normalization import L2Norm
from .modules import (AdaptiveAvgPool2d, AvgPool2d, Conv2d, CrossEntropyLoss, Dropout, Flatten,
                      Linear, LogSoftmax, MaxPool2d, NLLLoss, ReLU, Sigmoid, Softmax, Tanh)

__all__ = ["functional", "init", "utils", "Module", "Parameter", "Sequential", "ModuleList",
           "ModuleDict", "Identity",
           "Linear", "Conv2d", "BatchNorm1d", "BatchNorm2d", "BatchNormReLU1d", "BatchNormReLU2d",
           "SyncBatchNorm", "L2Norm",
           "ReLU", "Sigmoid", "Tanh", "Softmax", "LogSoftmax",
           "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "Flatten", "Dropout",
           "CrossEntropyLoss", "NLLLoss"]
