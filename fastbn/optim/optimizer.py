"""Optimizer base class, SGD, Adam, AdamW, RMSprop and Adadelta.

Parameters are anything with ``.data`` and ``.grad`` NumPy arrays (fastbn Parameters);
updates are written into ``.data`` in place, so a model's arrays stay the same objects.
Each parameter's update is one pass of a compiled kernel, not a handful of NumPy
operations with their temporaries, and a group's parameters are updated in one call
(fastbn.kernels.sgd_updates, adam_updates, ...): a bad gradient raises before any
parameter changes.
"""
import copy
import numbers

import numpy as np

from .. import kernels
from ..autograd import Tensor, zero_grads

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adadelta"]

# entries learning-rate schedulers keep in param groups (fastbn.optim.lr_scheduler)
_SCHEDULER_KEYS = frozenset({"initial_lr", "max_lr", "min_lr", "base_momentum",
                             "max_momentum"})


def _check_hyper(name, value, lo=0.0, hi=None, hi_open=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not value >= lo or (hi is not None and not (value < hi if hi_open else value <= hi)):
        rng = f"[{lo}, {hi})" if hi_open else f">= {lo}" if hi is None else f"[{lo}, {hi}]"
        raise ValueError(f"invalid {name}: {value} (must be {rng})")
    return value


def _state_array(value, name, key, param):
    """A saved state array (NumPy, fastbn Tensor or torch tensor) as a C-contiguous copy
    in the parameter's dtype, or a ValueError naming the state and parameter."""
    if isinstance(value, Tensor):
        value = value.data
    elif hasattr(value, "detach"):                     # torch.Tensor
        value = value.detach().cpu().numpy()
    value = np.asarray(value)
    if value.dtype.kind not in "fiu":
        raise ValueError(f"optimizer state '{name}' of parameter {key} has dtype {value.dtype}")
    if value.shape != param.data.shape:
        raise ValueError(f"optimizer state '{name}' of parameter {key} has shape "
                         f"{value.shape}, the parameter has {param.data.shape}")
    return np.array(value, dtype=param.data.dtype, order="C")


def _state_step(value, key):
    """A saved step count as an int (PyTorch keeps it as a float tensor)."""
    if isinstance(value, Tensor):
        value = value.data
    elif hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    value = np.asarray(value)
    if value.shape != () or value.dtype.kind not in "fiu" or not np.isfinite(value) \
            or value < 0 or value != np.floor(value):
        raise ValueError(f"optimizer state 'step' of parameter {key} must be a non-negative "
                         f"integer, got {value!r}")
    return int(value)


class Optimizer:
    """Base class of the optimizers (``torch.optim.Optimizer``).

    Holds param groups (lists of parameters with their hyperparameters) and
    per-parameter state.  Subclasses set ``defaults``, validate hyperparameters in
    ``_check_group``, name the state they keep (``_state_names``, ``_required_state``)
    and update one group in ``_step_group``.

    Parameters
    ----------
    params : iterable of Parameter or iterable of dict
        The parameters to optimize (anything with ``.data`` and ``.grad`` NumPy arrays,
        float32 or float64), or param groups: dicts with a ``'params'`` entry and
        options that override the defaults for those parameters.
    defaults : dict
        Every option with its default value (a group may set only these, plus the
        learning-rate schedulers' entries).

    Attributes
    ----------
    defaults : dict
        As given.
    param_groups : list of dict
        Each group's ``'params'`` and options.
    state : dict
        Per-parameter state arrays and counters.

    Raises
    ------
    TypeError
        For a single parameter instead of an iterable, an entry without ``.data`` and
        ``.grad``, an unknown option, or a hyperparameter that is not a real number.
    ValueError
        For no parameters, a parameter given twice, or a hyperparameter out of range.
    """

    _state_names = ()      # every array a parameter's state may hold
    _counts_steps = False  # whether the state holds a 'step' count

    def _required_state(self, group):
        """The arrays a parameter's non-empty state must hold under ``group``'s options."""
        return set(self._state_names)

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        self.state = {}  # id(param) -> dict of arrays and counters
        self.param_groups = []
        if hasattr(params, "data"):
            raise TypeError("params must be an iterable of parameters or of dicts, "
                            f"got a single {type(params).__name__}")
        params = list(params) if not isinstance(params, dict) else [params]
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group):
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError("a param group must be a dict with a 'params' entry")
        params = group["params"]
        params = [params] if hasattr(params, "data") else list(params)
        for p in params:
            if not (hasattr(p, "data") and hasattr(p, "grad")):
                raise TypeError(f"optimizer can only optimize parameters with .data and .grad, "
                                f"got {type(p).__name__}")
        if len({id(p) for p in params}) != len(params):
            raise ValueError("a parameter group holds a parameter more than once")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in params):
            raise ValueError("some parameters appear in more than one parameter group")
        unknown = set(group) - set(self.defaults) - {"params"} - _SCHEDULER_KEYS
        if unknown:
            raise TypeError(f"unknown optimizer options {sorted(unknown)}")
        full = {**self.defaults, **group, "params": params}
        self._check_group(full)
        self.param_groups.append(full)

    def _check_group(self, group):
        _check_hyper("lr", group["lr"])
        _check_hyper("weight_decay", group["weight_decay"])

    def _states_to_step(self, group, names):
        """The parameters of group that have a gradient, and their states, each holding a
        step count and a zero array for every name in ``names`` it lacks."""
        params = [p for p in group["params"] if p.grad is not None]
        states = []
        for p in params:
            state = self.state.setdefault(id(p), {})
            state.setdefault("step", 0)
            for name in names:
                if state.get(name) is None:
                    state[name] = np.zeros(p.data.shape, p.data.dtype)
            states.append(state)
        return params, states

    def zero_grad(self, set_to_none=True):
        zero_grads((p for group in self.param_groups for p in group["params"]), set_to_none)

    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            self._step_group(group)
        return loss

    def state_dict(self):
        """PyTorch's layout: ``{'state': {index: {...}}, 'param_groups': [{..., 'params': [index, ...]}]}``
        with parameters numbered in group order.  Arrays are copies."""
        index, groups = {}, []
        for group in self.param_groups:
            ids = []
            for p in group["params"]:
                index.setdefault(id(p), len(index))
                ids.append(index[id(p)])
            groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": ids})
        state = {index[pid]: copy.deepcopy(s) for pid, s in self.state.items() if pid in index}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore what :meth:`state_dict` returned (also after ``fastbn.save``/``load``).

        Everything is checked before anything changes: the number of groups and of
        parameters in each, the options (a state dict of another optimizer has options
        this one lacks), and every parameter's state: the names this optimizer keeps,
        arrays of the parameter's shape, a non-negative integer step.

        Raises
        ------
        ValueError
            Naming what does not fit.
        """
        try:
            saved_groups, saved_state = state_dict["param_groups"], state_dict["state"]
        except (TypeError, KeyError):
            raise ValueError("optimizer state_dict must have 'state' and 'param_groups'") from None
        name = type(self).__name__
        if not isinstance(saved_groups, (list, tuple)) or len(saved_groups) != len(self.param_groups):
            raise ValueError(f"optimizer state_dict has {len(saved_groups)} parameter groups, "
                             f"this {name} has {len(self.param_groups)}")
        params, new_groups = {}, []
        for i, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            if not isinstance(saved, dict) or "params" not in saved:
                raise ValueError(f"parameter group {i} of the state_dict has no 'params'")
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"parameter group {i} has {len(saved['params'])} parameters in "
                                 f"the state_dict and {len(group['params'])} in this optimizer")
            options = {k: v for k, v in saved.items() if k != "params"}
            unknown = set(options) - set(self.defaults) - _SCHEDULER_KEYS
            if unknown:
                raise ValueError(f"parameter group {i} of the state_dict has options "
                                 f"{sorted(unknown)} that {name} does not have: a state_dict "
                                 "of another optimizer?")
            if "betas" in options:  # JSON round trips turn tuples into lists
                options["betas"] = tuple(options["betas"])
            merged = {**group, **options}
            self._check_group(merged)
            new_groups.append((group, options, merged))
            params.update((int(k), (p, merged)) for k, p in zip(saved["params"], group["params"]))
        new_state = {}
        allowed = set(self._state_names) | ({"step"} if self._counts_steps else set())
        for key, s in dict(saved_state).items():
            p, group = params.get(int(key), (None, None))
            if p is None:
                raise ValueError(f"optimizer state_dict has state for unknown parameter {key}")
            s = dict(s)
            required = self._required_state(group) | ({"step"} if self._counts_steps else set())
            unknown = set(s) - allowed
            missing = required - set(s) if s else set()
            if unknown or missing:
                raise ValueError(
                    f"the state of parameter {key} does not fit {name}: "
                    + (f"it has {sorted(unknown)}" if unknown else "")
                    + (" and " if unknown and missing else "")
                    + (f"it lacks {sorted(missing)}" if missing else "")
                    + " (a state_dict of another optimizer, or of other options?)")
            new_state[id(p)] = {
                k: (_state_step(v, key) if k == "step" else
                    None if v is None and k not in required else
                    _state_array(v, k, key, p)) for k, v in s.items()}
        for group, options, _ in new_groups:
            group.update(options)
        self.state = new_state

    def __repr__(self):
        lines = [type(self).__name__ + " ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(group.items()) if k != "params"]
        return "\n".join(lines + [")"])


class SGD(Optimizer):
    """Stochastic gradient descent with PyTorch's momentum rule (``torch.optim.SGD``).

    Each step (:func:`fastbn.kernels.sgd_updates`, one compiled call per group)::

        g = grad + weight_decay * p
        buf = g (first step), else momentum * buf + (1 - dampening) * g
        g = g + momentum * buf if nesterov else buf
        p -= lr * g

    PyTorch's ``maximize``, ``foreach`` and ``differentiable`` are not accepted.

    Parameters
    ----------
    params : iterable of Parameter or iterable of dict
        The parameters to optimize (anything with ``.data`` and ``.grad`` NumPy arrays,
        float32 or float64), or param groups: dicts with a ``'params'`` entry and
        options that override the defaults for those parameters.
    lr : float, optional
        Learning rate, >= 0.
    momentum : float, optional
        Momentum factor, >= 0 (0: no momentum buffer is kept).
    dampening : float, optional
        Dampening of the momentum, >= 0.
    weight_decay : float, optional
        L2 penalty, >= 0.
    nesterov : bool, optional
        Nesterov momentum (needs momentum > 0 and dampening 0).

    Attributes
    ----------
    param_groups : list of dict
        Each group's ``'params'`` and options.
    state : dict
        Per-parameter state, in PyTorch's layout in ``state_dict()``: ``momentum_buffer``,
        of the parameter's shape and dtype.

    Raises
    ------
    TypeError
        For a single parameter instead of an iterable, an entry without ``.data`` and
        ``.grad``, an unknown option, or a hyperparameter that is not a real number.
    ValueError
        For no parameters, a parameter given twice, or a hyperparameter out of range.
    """

    _state_names = ("momentum_buffer",)

    def _required_state(self, group):
        return set()    # the momentum buffer appears with the first step

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov))

    def _check_group(self, group):
        super()._check_group(group)
        _check_hyper("momentum", group["momentum"])
        _check_hyper("dampening", group["dampening"])
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")

    def _step_group(self, group):
        momentum = group["momentum"]
        params, grads, bufs, firsts = [], [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state.get(id(p)) if momentum else None
            buf = None if state is None else state.get("momentum_buffer")
            first = bool(momentum) and buf is None
            if first:
                buf = np.empty(p.data.shape, p.data.dtype)
            params.append(p)
            grads.append(p.grad)
            bufs.append(buf)
            firsts.append(first)
        kernels.sgd_updates([p.data for p in params], grads, bufs, group["lr"],
                            group["weight_decay"], momentum, group["dampening"],
                            group["nesterov"], firsts)
        for p, buf, first in zip(params, bufs, firsts):
            if first:  # kept only once the update has filled it
                self.state.setdefault(id(p), {})["momentum_buffer"] = buf


class Adam(Optimizer):
    """Adam (Kingma & Ba) with L2 weight decay (``torch.optim.Adam``).

    PyTorch's bias correction; the weight decay is added to the gradient.

    Each step (:func:`fastbn.kernels.adam_updates`, one compiled call per group)::

        g = grad + weight_decay * p
        m = b1 * m + (1 - b1) * g;  v = b2 * v + (1 - b2) * g * g
        p -= lr / (1 - b1**t) * m / (sqrt(v) / sqrt(1 - b2**t) + eps)

    PyTorch's ``amsgrad`` (see :class:`AdamW`), ``maximize``, ``foreach`` and
    ``capturable`` are not accepted.

    Parameters
    ----------
    params : iterable of Parameter or iterable of dict
        The parameters to optimize (anything with ``.data`` and ``.grad`` NumPy arrays,
        float32 or float64), or param groups: dicts with a ``'params'`` entry and
        options that override the defaults for those parameters.
    lr : float, optional
        Learning rate, >= 0.
    betas : tuple of float, optional
        (b1, b2), each in [0, 1): the decay rates of the running averages of the
        gradient and its square.
    eps : float, optional
        Added to the denominator, >= 0.
    weight_decay : float, optional
        L2 penalty added to the gradient, >= 0.

    Attributes
    ----------
    param_groups : list of dict
        Each group's ``'params'`` and options.
    state : dict
        Per-parameter state, in PyTorch's layout in ``state_dict()``: ``step`` (an int),
        ``exp_avg`` and ``exp_avg_sq`` (of the parameter's shape and dtype).

    Raises
    ------
    TypeError
        For a single parameter instead of an iterable, an entry without ``.data`` and
        ``.grad``, an unknown option, or a hyperparameter that is not a real number.
    ValueError
        For no parameters, a parameter given twice, or a hyperparameter out of range.
    """

    _state_names = ("exp_avg", "exp_avg_sq")
    _counts_steps = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay))

    def _check_group(self, group):
        super()._check_group(group)
        betas = group["betas"]
        if len(betas) != 2:
            raise ValueError(f"betas must be a pair, got {betas!r}")
        for i, b in enumerate(betas):
            _check_hyper(f"beta parameter at index {i}", b, 0.0, 1.0, hi_open=True)
        _check_hyper("eps", group["eps"])

    def _step_group(self, group):
        params = [p for p in group["params"] if p.grad is not None]
        states = []
        for p in params:
            state = self.state.setdefault(id(p), {})
            if not state:
                state.update(step=0, exp_avg=np.zeros(p.data.shape, p.data.dtype),
                             exp_avg_sq=np.zeros(p.data.shape, p.data.dtype))
            states.append(state)
        b1, b2 = group["betas"]
        kernels.adam_updates([p.data for p in params], [p.grad for p in params],
                             [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
                             [s["step"] + 1 for s in states], group["lr"], b1, b2, group["eps"],
                             group["weight_decay"])
        for s in states:
            s["step"] += 1


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), PyTorch's ``AdamW``.

    Each step::

        p *= 1 - lr * weight_decay
        m = lerp(m, g, 1 - b1);  v = b2 * v + (1 - b2) * g * g
        v_max = max(v_max, v)    (amsgrad)
        p -= lr / (1 - b1**t) * m / (sqrt(v or v_max) / sqrt(1 - b2**t) + eps)

    Parameters
    ----------
    params : iterable of Parameter or of dict
        Parameters, or param groups (dicts with 'params' and options).
    lr : float, optional
        Learning rate (default 1e-3).
    betas : (float, float), optional
        Decay rates of the gradient's running mean and squared mean, each in [0, 1).
    eps : float, optional
        Added to the denominator (default 1e-8).
    weight_decay : float, optional
        Decoupled decay coefficient (default 1e-2).
    amsgrad : bool, optional
        Use the largest squared mean so far (AMSGrad).

    Raises
    ------
    ValueError, TypeError
        For a hyperparameter out of range or not a number, as PyTorch.
    """
    _state_names = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")

    def _required_state(self, group):
        return {"exp_avg", "exp_avg_sq"} | ({"max_exp_avg_sq"} if group["amsgrad"] else set())

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False):
        Optimizer.__init__(self, params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                              weight_decay=weight_decay, amsgrad=amsgrad))

    def _step_group(self, group):
        names = ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if group["amsgrad"] else ())
        params, states = self._states_to_step(group, names)
        b1, b2 = group["betas"]
        kernels.adamw_updates(
            [p.data for p in params], [p.grad for p in params], [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states],
            [s["max_exp_avg_sq"] if group["amsgrad"] else None for s in states],
            [s["step"] + 1 for s in states], group["lr"], b1, b2, group["eps"],
            group["weight_decay"])
        for s in states:
            s["step"] += 1


class RMSprop(Optimizer):
    """RMSprop with PyTorch's options and update rule.

    Each step::

        g = grad + weight_decay * p
        square_avg = alpha * square_avg + (1 - alpha) * g * g
        avg = sqrt(square_avg) + eps, or when centered
              sqrt(square_avg - grad_avg**2) + eps with grad_avg = lerp(grad_avg, g, 1 - alpha)
        p -= lr * g / avg, or with momentum: buf = momentum * buf + g / avg, p -= lr * buf

    Parameters
    ----------
    params : iterable of Parameter or of dict
        Parameters, or param groups (dicts with 'params' and options).
    lr : float, optional
        Learning rate (default 1e-2).
    alpha : float, optional
        Smoothing constant of the squared mean (default 0.99).
    eps : float, optional
        Added to the denominator (default 1e-8).
    weight_decay : float, optional
        L2 penalty (default 0).
    momentum : float, optional
        Momentum factor (default 0).
    centered : bool, optional
        Normalize by the estimated variance of the gradient instead of its squared mean.

    Raises
    ------
    ValueError, TypeError
        For a hyperparameter out of range or not a number, as PyTorch.
    """
    _state_names = ("square_avg", "momentum_buffer", "grad_avg")
    _counts_steps = True

    def _required_state(self, group):
        return ({"square_avg"} | ({"momentum_buffer"} if group["momentum"] > 0 else set())
                | ({"grad_avg"} if group["centered"] else set()))

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0,
                 centered=False):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered))

    def _check_group(self, group):
        super()._check_group(group)
        _check_hyper("eps", group["eps"])
        _check_hyper("momentum", group["momentum"])
        _check_hyper("alpha", group["alpha"])

    def _step_group(self, group):
        momentum, centered = group["momentum"], group["centered"]
        names = (("square_avg",) + (("momentum_buffer",) if momentum > 0 else ())
                 + (("grad_avg",) if centered else ()))
        params, states = self._states_to_step(group, names)
        kernels.rmsprop_updates(
            [p.data for p in params], [p.grad for p in params],
            [s["square_avg"] for s in states],
            [s["grad_avg"] if centered else None for s in states],
            [s["momentum_buffer"] if momentum > 0 else None for s in states],
            group["lr"], group["alpha"], group["eps"], group["weight_decay"], momentum)
        for s in states:
            s["step"] += 1


class Adadelta(Optimizer):
    """Adadelta (Zeiler 2012) with PyTorch's update rule.

    Each step::

        g = grad + weight_decay * p
        square_avg = rho * square_avg + (1 - rho) * g * g
        delta = sqrt(acc_delta + eps) / sqrt(square_avg + eps) * g
        acc_delta = rho * acc_delta + (1 - rho) * delta * delta
        p -= lr * delta

    Parameters
    ----------
    params : iterable of Parameter or of dict
        Parameters, or param groups (dicts with 'params' and options).
    lr : float, optional
        Scale of the update (default 1.0).
    rho : float, optional
        Smoothing constant of the running averages, in [0, 1] (default 0.9).
    eps : float, optional
        Added inside the square roots (default 1e-6).
    weight_decay : float, optional
        L2 penalty (default 0).

    Raises
    ------
    ValueError, TypeError
        For a hyperparameter out of range or not a number, as PyTorch.
    """
    _state_names = ("square_avg", "acc_delta")
    _counts_steps = True

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0):
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay))

    def _check_group(self, group):
        super()._check_group(group)
        _check_hyper("rho", group["rho"], 0.0, 1.0)
        _check_hyper("eps", group["eps"])

    def _step_group(self, group):
        params, states = self._states_to_step(group, self._state_names)
        kernels.adadelta_updates(
            [p.data for p in params], [p.grad for p in params],
            [s["square_avg"] for s in states], [s["acc_delta"] for s in states],
            group["lr"], group["rho"], group["eps"], group["weight_decay"])
        for s in states:
            s["step"] += 1
