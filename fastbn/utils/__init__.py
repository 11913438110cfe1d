"""``torch.utils``'s place: ``fastbn.utils.data`` holds the datasets and loaders, so that
``from torch.utils.data import DataLoader`` becomes ``from fastbn.utils.data import ...``."""
from . import data

__all__ = ["data"]
