"""Optimizers and learning-rate schedulers with PyTorch's names, defaults and update rules."""
from . import lr_scheduler
from .optimizer import SGD, Adam, Optimizer

__all__ = ["Optimizer", "SGD", "Adam", "lr_scheduler"]
