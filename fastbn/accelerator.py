"""``torch.accelerator``'s queries, answered truthfully: fastbn runs on the CPU only.

PyTorch's examples pick their device with ``torch.accelerator.is_available()`` and
``torch.accelerator.current_accelerator()``; with fastbn they choose the CPU.
"""
__all__ = ["is_available", "current_accelerator", "device_count"]


def is_available():
    """False: fastbn has no accelerator.

    Returns
    -------
    bool
    """
    return False


def current_accelerator(check_available=False):
    """None, as PyTorch answers where there is no accelerator.

    Parameters
    ----------
    check_available : bool, optional
        Accepted for PyTorch's signature; the answer is None either way.

    Returns
    -------
    None
    """
    return None


def device_count():
    """0: the number of accelerators fastbn can use.

    Returns
    -------
    int
    """
    return 0
