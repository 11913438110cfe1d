"""``torch.utils.data``'s names for fastbn's datasets and loader (defined in
``fastbn.data``)."""
from ..data import DataLoader, TensorDataset

__all__ = ["DataLoader", "TensorDataset"]
