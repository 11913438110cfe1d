"""Optimizer base class, SGD and Adam.

Parameters are anything with ``.data`` and ``.grad`` NumPy arrays (fastbn Parameters);
updates are written into ``.data`` in place, so a model's arrays stay the same objects.
Each parameter's update is one pass of a compiled kernel, not a handful of NumPy
operations with their temporaries, and a group's parameters are updated in one call
(fastbn.kernels.sgd_updates, adam_updates): a bad gradient raises before any
parameter changes.
"""
import copy
import numbers

import numpy as np

from .. import kernels
from ..autograd import zero_grads

__all__ = ["Optimizer", "SGD", "Adam"]


def _check_hyper(name, value, lo=0.0, hi=None, hi_open=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not value >= lo or (hi is not None and not (value < hi if hi_open else value <= hi)):
        rng = f"[{lo}, {hi})" if hi_open else f">= {lo}" if hi is None else f"[{lo}, {hi}]"
        raise ValueError(f"invalid {name}: {value} (must be {rng})")
    return value


class Optimizer:
    """Holds param groups (lists of parameters with their hyperparameters) and per-parameter
    state.  Subclasses set ``defaults``, validate hyperparameters in ``_check_group`` and
    update one group in ``_step_group``."""

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
        unknown = set(group) - set(self.defaults) - {"params", "initial_lr"}
        if unknown:
            raise TypeError(f"unknown optimizer options {sorted(unknown)}")
        full = {**self.defaults, **group, "params": params}
        self._check_group(full)
        self.param_groups.append(full)

    def _check_group(self, group):
        _check_hyper("lr", group["lr"])
        _check_hyper("weight_decay", group["weight_decay"])

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
        try:
            saved_groups, saved_state = state_dict["param_groups"], state_dict["state"]
        except (TypeError, KeyError):
            raise ValueError("optimizer state_dict must have 'state' and 'param_groups'") from None
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"optimizer state_dict has {len(saved_groups)} parameter groups, "
                             f"this optimizer has {len(self.param_groups)}")
        params = {}
        for i, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"parameter group {i} has {len(saved['params'])} parameters in "
                                 f"the state_dict and {len(group['params'])} in this optimizer")
            params.update(zip(saved["params"], group["params"]))
        new_state = {}
        for key, s in saved_state.items():
            p = params.get(int(key))
            if p is None:
                raise ValueError(f"optimizer state_dict has state for unknown parameter {key}")
            s = copy.deepcopy(dict(s))
            for name, v in s.items():
                if isinstance(v, np.ndarray):
                    if v.shape != p.data.shape:
                        raise ValueError(f"optimizer state '{name}' of parameter {key} has shape "
                                         f"{v.shape}, the parameter has {p.data.shape}")
                    s[name] = np.array(v, dtype=p.data.dtype, order="C")
            new_state[id(p)] = s
        for saved, group in zip(saved_groups, self.param_groups):
            options = {k: v for k, v in saved.items() if k != "params"}
            if "betas" in options:  # JSON round trips turn tuples into lists
                options["betas"] = tuple(options["betas"])
            self._check_group({**group, **options})
            group.update(options)
        self.state = new_state

    def __repr__(self):
        lines = [type(self).__name__ + " ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(group.items()) if k != "params"]
        return "\n".join(lines + [")"])


class SGD(Optimizer):
    """Stochastic gradient descent with PyTorch's momentum rule.

    Each step::

        g = grad + weight_decay * p
        buf = g (first step), else momentum * buf + (1 - dampening) * g
        g = g + momentum * buf if nesterov else buf
        p -= lr * g
    """

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
    """Adam (Kingma & Ba) with PyTorch's bias correction and L2 weight decay.

    Each step::

        m = b1 * m + (1 - b1) * g;  v = b2 * v + (1 - b2) * g * g
        p -= lr / (1 - b1**t) * m / (sqrt(v) / sqrt(1 - b2**t) + eps)
    """

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
