"""Neural-network building blocks; ``fastbn.nn.functional`` holds the ops."""
from . import functional

__all__ = ["functional"]
