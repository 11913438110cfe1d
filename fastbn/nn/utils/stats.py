"""Recomputing BatchNorm's running statistics (``torch.optim.swa_utils.update_bn``)."""
from ..._types import check_device
from ...autograd import no_grad
from ..batchnorm import _BatchNorm, _BatchRenorm, _GhostBatchNorm

__all__ = ["update_bn"]

# the layers whose running statistics estimate their input's population statistics
_BATCH_STATISTICS = (_BatchNorm, _BatchRenorm, _GhostBatchNorm)


def update_bn(loader, model, device=None):
    """Recompute the running statistics of every BatchNorm layer of ``model`` from one
    pass over ``loader`` (PyTorch's ``torch.optim.swa_utils.update_bn``).

    Each layer's running mean and variance are reset and become the cumulative average
    of the statistics of every batch of the pass (momentum None for the pass,
    restored after), with the model in training mode and no gradient recorded; then
    the model's training mode is restored.  Use it after training, when the running
    statistics lag behind the final weights (a high learning rate at the end, weight
    averaging, a momentum too small for the run's length), or on data of another
    distribution.

    The layers: BatchNorm1d/2d/3d, BatchNormReLU1d/2d, SyncBatchNorm (under MPI, the
    statistics of every rank's batches), GhostBatchNorm1d/2d (from their ghost batches'
    statistics) and BatchRenorm1d/2d, which normalize as BatchNorm during the pass
    (r = 1, d = 0: their corrections are relative to the running statistics being
    recomputed); those with ``track_running_stats=False`` are left alone.  Layers
    without running statistics (GroupNorm, LayerNorm, InstanceNorm, as in PyTorch
    even with ``track_running_stats``) are not touched; a model with no BatchNorm
    layer is left as it is and the loader is not read.

    Parameters
    ----------
    loader : iterable
        Batches of inputs, or of ``(input, ...)`` tuples or lists whose first element
        is the model's input (a :class:`fastbn.data.DataLoader` of
        ``(images, labels)``).
    model : Module
    device : None or 'cpu', optional
        PyTorch's argument: fastbn runs on the CPU.

    Raises
    ------
    ValueError, TypeError
        For a device other than the CPU, or what the model raises on a batch (a batch
        of one sample for a BatchNorm1d, say); the momenta, limits and training mode
        are restored even then, the statistics are those of the batches before.
    """
    check_device(device)
    layers = [m for m in model.modules() if isinstance(m, _BATCH_STATISTICS)]
    if not layers:
        return
    saved = [(m, m.momentum, getattr(m, "r_max", None), getattr(m, "d_max", None))
             for m in layers]
    was_training = model.training
    try:
        for m in layers:
            m.reset_running_stats()
            m.momentum = None
            if isinstance(m, _BatchRenorm):
                m.r_max, m.d_max = 1.0, 0.0
        model.train()
        with no_grad():
            for batch in loader:
                model(batch[0] if isinstance(batch, (list, tuple)) else batch)
    finally:
        for m, momentum, r_max, d_max in saved:
            m.momentum = momentum
            if isinstance(m, _BatchRenorm):
                m.r_max, m.d_max = r_max, d_max
        model.train(was_training)
