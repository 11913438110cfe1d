"""Learning-rate schedulers with PyTorch's names, arguments and sequences, stepped after
the optimizer (once per epoch, or per batch for OneCycleLR).

Each sets ``group['lr']`` from its base lr and ``last_epoch`` in closed form, so a scheduler
restored from its state_dict continues the same sequence; SequentialLR hands over from one
to the next at its milestones, and ReduceLROnPlateau lowers the lr when a metric stalls.
"""
import bisect
import math
import numbers

__all__ = ["LRScheduler", "StepLR", "MultiStepLR", "ExponentialLR", "CosineAnnealingLR",
           "LinearLR", "OneCycleLR", "SequentialLR", "ReduceLROnPlateau"]


class LRScheduler:
    """Base of the closed-form schedulers: subclasses give the lr of a group at
    ``last_epoch`` in ``_lr(base)`` (or of every group in ``_lrs()``)."""

    def __init__(self, optimizer, last_epoch=-1):
        if not hasattr(optimizer, "param_groups"):
            raise TypeError(f"{type(optimizer).__name__} is not an optimizer")
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        elif any("initial_lr" not in g for g in optimizer.param_groups):
            raise KeyError("param 'initial_lr' is not specified in param_groups when "
                           "resuming an optimizer (last_epoch != -1)")
        self.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
        self.last_epoch = last_epoch
        self.step()

    def step(self, epoch=None):
        """Advance one epoch (or, as PyTorch's deprecated form, go to ``epoch``) and set
        every group's lr."""
        self.last_epoch = self.last_epoch + 1 if epoch is None else int(epoch)
        self._set_lrs()

    def _set_lrs(self):
        for group, lr in zip(self.optimizer.param_groups, self._lrs()):
            group["lr"] = lr
        self._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    def _lrs(self):
        """Every group's learning rate at ``self.last_epoch``."""
        return [self._lr(base) for base in self.base_lrs]

    def _lr(self, base):
        """The learning rate at ``self.last_epoch`` for a group starting at ``base``."""
        raise NotImplementedError

    def get_last_lr(self):
        """The learning rates the last step set, one per param group."""
        return list(self._last_lr)

    def state_dict(self):
        """Every attribute but the optimizer, as PyTorch does."""
        return {k: (list(v) if isinstance(v, list) else v)
                for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state_dict):
        unknown = set(state_dict) - set(self.__dict__)
        if unknown:
            raise ValueError(f"{type(self).__name__} state_dict has unknown entries {sorted(unknown)}")
        self.__dict__.update(state_dict)
        self._set_lrs()

    def __repr__(self):
        args = ", ".join(f"{k}={v}" for k, v in self.state_dict().items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


def _positive(name, value, integral=False):
    kind = numbers.Integral if integral else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind) or value <= 0:
        raise ValueError(f"{name} must be a positive {'int' if integral else 'number'}, got {value!r}")
    return value


class StepLR(LRScheduler):
    """lr = base_lr * gamma ** (epoch // step_size)."""

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        self.step_size = _positive("step_size", step_size, integral=True)
        self.gamma = _positive("gamma", gamma)
        super().__init__(optimizer, last_epoch)

    def _lr(self, base):
        return base * self.gamma ** (self.last_epoch // self.step_size)


class ExponentialLR(LRScheduler):
    """lr = base_lr * gamma ** epoch."""

    def __init__(self, optimizer, gamma, last_epoch=-1):
        self.gamma = _positive("gamma", gamma)
        super().__init__(optimizer, last_epoch)

    def _lr(self, base):
        return base * self.gamma ** self.last_epoch


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2 (SGDR without
    restarts; PyTorch's closed form)."""

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):
        self.T_max = _positive("T_max", T_max, integral=True)
        self.eta_min = float(eta_min)
        super().__init__(optimizer, last_epoch)

    def _lr(self, base):
        cos = (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
        return self.eta_min + (base - self.eta_min) * cos


class MultiStepLR(LRScheduler):
    """lr = base_lr * gamma ** (number of milestones <= epoch); a milestone given twice
    counts twice, as in PyTorch.

    Parameters
    ----------
    optimizer : Optimizer
    milestones : iterable of int
        Epochs at which the lr is multiplied by gamma.
    gamma : float, optional
        The factor (default 0.1).
    last_epoch : int, optional
        The epoch to resume after (-1: start).
    """

    def __init__(self, optimizer, milestones, gamma=0.1, last_epoch=-1):
        milestones = list(milestones)
        if any(isinstance(m, bool) or not isinstance(m, numbers.Integral) for m in milestones):
            raise ValueError(f"milestones must be ints, got {milestones!r}")
        self.milestones = sorted(int(m) for m in milestones)
        self.gamma = _positive("gamma", gamma)
        super().__init__(optimizer, last_epoch)

    def _lr(self, base):
        return base * self.gamma ** bisect.bisect_right(self.milestones, self.last_epoch)


class LinearLR(LRScheduler):
    """lr = base_lr * factor, the factor going linearly from start_factor to end_factor
    over total_iters epochs, then staying at end_factor (a warm-up).

    Parameters
    ----------
    optimizer : Optimizer
    start_factor : float, optional
        In (0, 1] (default 1/3).
    end_factor : float, optional
        In [0, 1] (default 1).
    total_iters : int, optional
        Epochs until end_factor is reached (default 5).
    last_epoch : int, optional
        The epoch to resume after (-1: start).
    """

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5,
                 last_epoch=-1):
        if not isinstance(start_factor, numbers.Real) or not 0 < start_factor <= 1:
            raise ValueError("Starting multiplicative factor expected to be greater than 0 "
                             f"and less or equal to 1, got {start_factor!r}")
        if not isinstance(end_factor, numbers.Real) or not 0 <= end_factor <= 1:
            raise ValueError(f"Ending multiplicative factor expected to be between 0 and 1, "
                             f"got {end_factor!r}")
        self.start_factor, self.end_factor = float(start_factor), float(end_factor)
        self.total_iters = _positive("total_iters", total_iters, integral=True)
        super().__init__(optimizer, last_epoch)

    def _lr(self, base):
        done = min(self.total_iters, self.last_epoch) / self.total_iters
        return base * (self.start_factor + (self.end_factor - self.start_factor) * done)


def _per_group(name, value, optimizer):
    """A scalar or a list with one value per param group, as a list."""
    groups = len(optimizer.param_groups)
    values = list(value) if isinstance(value, (list, tuple)) else [value] * groups
    if len(values) != groups:
        raise ValueError(f"expected {groups} values for {name}, got {len(values)}")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise TypeError(f"{name} must be numbers, got {v!r}")
    return [float(v) for v in values]


class OneCycleLR(LRScheduler):
    """The 1cycle policy (Smith & Topin), stepped after every batch: the lr rises from
    max_lr / div_factor to max_lr over pct_start of the steps, then anneals to
    max_lr / div_factor / final_div_factor, while the momentum (SGD's momentum, Adam's
    beta1) cycles the other way.  PyTorch's phases, formulas and group entries
    (``initial_lr``, ``max_lr``, ``min_lr``, ``max_momentum``, ``base_momentum``).

    Parameters
    ----------
    optimizer : Optimizer
    max_lr : float or list of float
        The peak lr, per group.
    total_steps : int, optional
        Steps in the cycle; or give epochs and steps_per_epoch.
    epochs, steps_per_epoch : int, optional
    pct_start : float, optional
        Fraction of the steps spent rising (default 0.3).
    anneal_strategy : {'cos', 'linear'}, optional
    cycle_momentum : bool, optional
        Cycle the momentum between base_momentum and max_momentum (default True).
    base_momentum, max_momentum : float or list of float, optional
    div_factor : float, optional
        initial_lr = max_lr / div_factor (default 25).
    final_div_factor : float, optional
        min_lr = initial_lr / final_div_factor (default 1e4).
    three_phase : bool, optional
        Rise, fall back to initial_lr symmetrically, then anneal to min_lr.
    last_epoch : int, optional
        The step to resume after (-1: start).

    Raises
    ------
    ValueError
        For inconsistent arguments, and when stepped past total_steps.
    """

    def __init__(self, optimizer, max_lr, total_steps=None, epochs=None, steps_per_epoch=None,
                 pct_start=0.3, anneal_strategy="cos", cycle_momentum=True,
                 base_momentum=0.85, max_momentum=0.95, div_factor=25.0,
                 final_div_factor=1e4, three_phase=False, last_epoch=-1):
        if not hasattr(optimizer, "param_groups"):
            raise TypeError(f"{type(optimizer).__name__} is not an optimizer")
        if total_steps is not None:
            self.total_steps = _positive("total_steps", total_steps, integral=True)
        elif epochs is not None and steps_per_epoch is not None:
            self.total_steps = (_positive("epochs", epochs, integral=True)
                                * _positive("steps_per_epoch", steps_per_epoch, integral=True))
        else:
            raise ValueError("You must define either total_steps OR (epochs AND "
                             "steps_per_epoch)")
        if isinstance(pct_start, bool) or not isinstance(pct_start, numbers.Real) \
                or not 0 <= pct_start <= 1:
            raise ValueError(f"Expected float between 0 and 1 pct_start, but got {pct_start!r}")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"anneal_strategy must be one of 'cos' or 'linear', got "
                             f"{anneal_strategy!r}")
        self.anneal_strategy = anneal_strategy
        T, pct = self.total_steps, float(pct_start)
        if three_phase:
            self._phases = [
                (pct * T - 1, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                (2 * pct * T - 2, "max_lr", "initial_lr", "base_momentum", "max_momentum"),
                (T - 1, "initial_lr", "min_lr", "max_momentum", "max_momentum")]
        else:
            self._phases = [
                (pct * T - 1, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                (T - 1, "max_lr", "min_lr", "base_momentum", "max_momentum")]
        ends = [0.0] + [phase[0] for phase in self._phases]
        if any(b <= a for a, b in zip(ends, ends[1:])):
            raise ValueError(f"pct_start={pct_start} leaves a phase of the cycle without steps "
                             f"(total_steps={T}); use more steps or another pct_start")
        groups = optimizer.param_groups
        max_lrs = _per_group("max_lr", max_lr, optimizer)
        div, final_div = _positive("div_factor", div_factor), \
            _positive("final_div_factor", final_div_factor)
        self.cycle_momentum = bool(cycle_momentum)
        if self.cycle_momentum:
            defaults = getattr(optimizer, "defaults", {})
            if "momentum" not in defaults and "betas" not in defaults:
                raise ValueError("optimizer must support momentum or beta1 with "
                                 "`cycle_momentum` option enabled")
            self.use_beta1 = "betas" in defaults
            max_ms = _per_group("max_momentum", max_momentum, optimizer)
            base_ms = _per_group("base_momentum", base_momentum, optimizer)
        if last_epoch == -1:
            for i, group in enumerate(groups):
                group["initial_lr"] = max_lrs[i] / div
                group["max_lr"] = max_lrs[i]
                group["min_lr"] = group["initial_lr"] / final_div
                if self.cycle_momentum:
                    self._set_momentum(group, max_ms[i])
                    group["max_momentum"] = max_ms[i]
                    group["base_momentum"] = base_ms[i]
        super().__init__(optimizer, last_epoch)

    def _set_momentum(self, group, value):
        if self.use_beta1:
            group["betas"] = (value, *group["betas"][1:])
        else:
            group["momentum"] = value

    def _anneal(self, start, end, pct):
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def step(self, epoch=None):
        """Advance one step (the state is left alone when that passes total_steps)."""
        nxt = self.last_epoch + 1 if epoch is None else int(epoch)
        if nxt > self.total_steps:
            raise ValueError(f"Tried to step {nxt} times. The specified number of total steps "
                             f"is {self.total_steps}")
        super().step(epoch)

    def _lrs(self):
        step, lrs = self.last_epoch, []
        for group in self.optimizer.param_groups:
            start = 0.0
            for i, (end, lr0, lr1, m0, m1) in enumerate(self._phases):
                if step <= end or i == len(self._phases) - 1:
                    pct = (step - start) / (end - start)
                    lrs.append(self._anneal(group[lr0], group[lr1], pct))
                    if self.cycle_momentum:
                        self._set_momentum(group, self._anneal(group[m0], group[m1], pct))
                    break
                start = end
        return lrs


class SequentialLR(LRScheduler):
    """Schedulers one after another: ``schedulers[i]`` runs from ``milestones[i-1]`` on,
    restarted at its own epoch 0 (PyTorch's SequentialLR, e.g. LinearLR warm-up then
    CosineAnnealingLR).

    Parameters
    ----------
    optimizer : Optimizer
        The optimizer every scheduler drives.
    schedulers : list of LRScheduler
    milestones : list of int
        len(schedulers) - 1 epochs, increasing.
    last_epoch : int, optional
    """

    def __init__(self, optimizer, schedulers, milestones, last_epoch=-1):
        schedulers, milestones = list(schedulers), list(milestones)
        if not schedulers:
            raise ValueError("SequentialLR expects at least one scheduler")
        for i, sched in enumerate(schedulers):
            if not isinstance(sched, LRScheduler) or isinstance(sched, ReduceLROnPlateau):
                raise ValueError(f"SequentialLR: scheduler at index {i} is a "
                                 f"{type(sched).__name__}, not a closed-form scheduler")
            if sched.optimizer is not optimizer:
                raise ValueError(f"SequentialLR expects all schedulers to belong to the same "
                                 f"optimizer, but the scheduler at index {i} has another")
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(f"SequentialLR: expected {len(schedulers) - 1} milestones, got "
                             f"{len(milestones)}")
        if any(isinstance(m, bool) or not isinstance(m, numbers.Integral) for m in milestones) \
                or milestones != sorted(milestones):
            raise ValueError(f"milestones must be increasing ints, got {milestones!r}")
        self.optimizer = optimizer
        self._schedulers = schedulers
        self._milestones = milestones
        self.last_epoch = last_epoch + 1
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"]
        for sched in schedulers:         # undo the step each made when it was built
            sched.last_epoch -= 1
        schedulers[0].step()
        self._last_lr = schedulers[0].get_last_lr()

    def step(self, epoch=None):
        """Advance one epoch: the scheduler in charge steps, from its epoch 0 at its
        milestone."""
        if epoch is not None:
            raise TypeError("SequentialLR.step() takes no epoch")
        self.last_epoch += 1
        i = bisect.bisect_right(self._milestones, self.last_epoch)
        sched = self._schedulers[i]
        if i > 0 and self._milestones[i - 1] == self.last_epoch:
            sched.step(0)
        else:
            sched.step()
        self._last_lr = sched.get_last_lr()

    def state_dict(self):
        """Its own entries and each scheduler's state_dict, as PyTorch."""
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "_schedulers")}
        state["_milestones"] = list(self._milestones)
        state["_schedulers"] = [s.state_dict() for s in self._schedulers]
        return state

    def load_state_dict(self, state_dict):
        state = dict(state_dict)
        inner = state.pop("_schedulers", None)
        if not isinstance(inner, (list, tuple)) or len(inner) != len(self._schedulers):
            raise ValueError(f"SequentialLR state_dict must hold {len(self._schedulers)} "
                             "scheduler states")
        unknown = set(state) - set(self.__dict__)
        if unknown:
            raise ValueError(f"SequentialLR state_dict has unknown entries {sorted(unknown)}")
        for sched, s in zip(self._schedulers, inner):
            sched.load_state_dict(s)
        self.__dict__.update(state)


class ReduceLROnPlateau(LRScheduler):
    """Multiply the lr by ``factor`` when a metric has not improved for ``patience``
    epochs (PyTorch's rule and arguments): call ``step(metric)`` after each evaluation.

    Parameters
    ----------
    optimizer : Optimizer
    mode : {'min', 'max'}, optional
        Whether the metric should fall (a loss) or rise (an accuracy).
    factor : float, optional
        New lr = lr * factor, factor < 1 (default 0.1).
    patience : int, optional
        Epochs without improvement tolerated (default 10).
    threshold : float, optional
        Least change counted as an improvement (default 1e-4).
    threshold_mode : {'rel', 'abs'}, optional
        Relative (best * (1 -+ threshold)) or absolute (best -+ threshold).
    cooldown : int, optional
        Epochs to wait after a reduction before counting again (default 0).
    min_lr : float or list of float, optional
        Lower bound of the lr, per group (default 0).
    eps : float, optional
        A reduction smaller than eps is skipped (default 1e-8).
    """

    def __init__(self, optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4,
                 threshold_mode="rel", cooldown=0, min_lr=0, eps=1e-8):
        if not hasattr(optimizer, "param_groups"):
            raise TypeError(f"{type(optimizer).__name__} is not an optimizer")
        if isinstance(factor, bool) or not isinstance(factor, numbers.Real) or factor >= 1.0:
            raise ValueError(f"Factor should be < 1.0, got {factor!r}")
        if mode not in ("min", "max"):
            raise ValueError(f"mode {mode!r} is unknown (expected 'min' or 'max')")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold mode {threshold_mode!r} is unknown (expected 'rel' "
                             "or 'abs')")
        for name, value in (("patience", patience), ("cooldown", cooldown)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        self.optimizer = optimizer
        self.factor = float(factor)
        self.min_lrs = _per_group("min_lr", min_lr, optimizer)
        self.patience, self.cooldown = int(patience), int(cooldown)
        self.mode, self.threshold, self.threshold_mode = mode, float(threshold), threshold_mode
        self.eps = float(eps)
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.last_epoch = 0
        self._last_lr = [g["lr"] for g in optimizer.param_groups]

    def _is_better(self, value):
        if self.mode == "min":
            bound = (self.best * (1 - self.threshold) if self.threshold_mode == "rel"
                     else self.best - self.threshold)
            return value < bound
        bound = (self.best * (1 + self.threshold) if self.threshold_mode == "rel"
                 else self.best + self.threshold)
        return value > bound

    def step(self, metrics, epoch=None):
        """Record this epoch's metric (a number or a one-element tensor); lower the lr
        of every group when it has stalled for more than ``patience`` epochs."""
        value = float(metrics)
        self.last_epoch = self.last_epoch + 1 if epoch is None else int(epoch)
        if self._is_better(value):
            self.best = value
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            for group, floor in zip(self.optimizer.param_groups, self.min_lrs):
                old = float(group["lr"])
                new = max(old * self.factor, floor)
                if old - new > self.eps:
                    group["lr"] = new
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    def load_state_dict(self, state_dict):
        unknown = set(state_dict) - set(self.__dict__)
        if unknown:
            raise ValueError(f"ReduceLROnPlateau state_dict has unknown entries {sorted(unknown)}")
        self.__dict__.update(state_dict)
