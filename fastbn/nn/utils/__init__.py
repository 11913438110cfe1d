"""Model utilities, one module per concern as in ``torch.nn.utils``."""
from .fusion import fold_batch_norm
from .weight_norm import remove_weight_norm, weight_norm

__all__ = ["fold_batch_norm", "weight_norm", "remove_weight_norm"]
