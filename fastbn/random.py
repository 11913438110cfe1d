"""The global random generator behind parameter initialization, shuffling and dropout.

Like PyTorch's default CPU generator it starts from a fixed seed, so a fresh process is
reproducible; ``fastbn.manual_seed(s)`` reseeds it.  Its state is plain JSON-able data,
which checkpoints save and restore.
"""
import numbers

import numpy as np

__all__ = ["manual_seed", "default_generator", "get_rng_state", "set_rng_state", "initial_seed"]

_DEFAULT_SEED = 67280421310721  # PyTorch's default, for the same spirit, not the same stream
_seed = _DEFAULT_SEED
default_generator = np.random.Generator(np.random.PCG64(_seed))
"""The global ``numpy.random.Generator``; reseeding changes its state, never the object."""


def _check_seed(seed):
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return int(seed)


def manual_seed(seed):
    """Reseed fastbn's global generator (``torch.manual_seed``).

    The generator draws parameter initializations, shuffling and dropout; reseeding
    changes its state, never the object.

    Parameters
    ----------
    seed : int
        Non-negative.

    Returns
    -------
    numpy.random.Generator
        The global generator, as PyTorch returns its generator.

    Raises
    ------
    ValueError
        For a seed that is not a non-negative int.
    """
    global _seed
    _seed = _check_seed(seed)
    default_generator.bit_generator.state = np.random.PCG64(_seed).state
    return default_generator


def initial_seed():
    """The seed the global generator was last seeded with."""
    return _seed


def get_rng_state():
    """The global generator's state as a JSON-able dict."""
    return default_generator.bit_generator.state


def set_rng_state(state):
    """Restore a state returned by :func:`get_rng_state`."""
    if not isinstance(state, dict) or state.get("bit_generator") != "PCG64":
        raise ValueError("not a fastbn RNG state (expected a PCG64 bit generator state dict)")
    default_generator.bit_generator.state = state
