"""Neural-network building blocks: layers, initialization, model utilities;
``fastbn.nn.functional`` holds the ops."""
from . import functional, init, utils
from .batchnorm import BatchNorm1d, BatchNorm2d, BatchNormReLU1d, BatchNormReLU2d
from .syncbatchnorm import SyncBatchNorm
from .module import Identity, Module, Parameter, Sequential
from .normalization import L2Norm
from .modules import (AvgPool2d, Conv2d, CrossEntropyLoss, Dropout, Flatten, Linear, MaxPool2d,
                      ReLU, Sigmoid, Tanh)

__all__ = ["functional", "init", "utils", "Module", "Parameter", "Sequential", "Identity",
           "Linear", "Conv2d", "BatchNorm1d", "BatchNorm2d", "BatchNormReLU1d", "BatchNormReLU2d",
           "SyncBatchNorm", "L2Norm",
           "ReLU", "Sigmoid", "Tanh",
           "MaxPool2d", "AvgPool2d", "Flatten", "Dropout", "CrossEntropyLoss"]
