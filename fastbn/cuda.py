"""``torch.cuda``'s queries, answered truthfully: fastbn runs on the CPU only.

Scripts written for PyTorch pick their device with
``torch.device("cuda" if torch.cuda.is_available() else "cpu")``; with fastbn this
chooses the CPU.
"""
__all__ = ["is_available", "device_count"]


def is_available():
    """False: fastbn has no CUDA device.

    Returns
    -------
    bool
    """
    return False


def device_count():
    """0: the number of CUDA devices fastbn can use.

    Returns
    -------
    int
    """
    return 0
