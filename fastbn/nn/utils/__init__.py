"""Model utilities, one module per concern as in ``torch.nn.utils``."""
from .fusion import FoldedBatchNorm, fold_batch_norm

__all__ = ["fold_batch_norm", "FoldedBatchNorm"]
