"""Model utilities, one module per concern as in ``torch.nn.utils``."""
from .clip_grad import clip_grad_norm_
from .fusion import FoldedBatchNorm, fold_batch_norm
from .weight_norm import remove_weight_norm, weight_norm

__all__ = ["fold_batch_norm", "FoldedBatchNorm", "clip_grad_norm_", "weight_norm",
           "remove_weight_norm"]
