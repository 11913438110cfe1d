"""Model utilities, one module per concern as in ``torch.nn.utils``."""
from .clip_grad import clip_grad_norm_
from .fusion import fold_batch_norm

__all__ = ["fold_batch_norm", "clip_grad_norm_"]
