"""asv benchmarks of whole training steps and of conv2d, through fastbn's
tape, modules and optimizers (PyTorch-like API).

    python benchmarks/bench_train.py [--repeat 30] [--threads 1 2] [--models ...]

prints the steps head-to-head with PyTorch (alternated in one process,
medians): time ratio and BatchNorm's share of each library's step; then the
MLP step's 11 matrix products alone in each library (timed in the same turns)
and their share of that library's step.

Models: ``mlp`` (the BN paper's MNIST MLP, batch 60), ``convnet`` (the
trainer's convnet, batch 64, 28x28), ``digits`` (the same on 8x8), and two
real nets from fastbn.models against the PyTorch definitions they follow
(tests/torch_models.py): ``resnet20`` (batch 128, 3x32x32) and ``inception``
(the small BN-Inception, batch 64, 1x28x28).  A step: zero_grad, forward,
cross-entropy, backward, SGD with momentum.  BN share: the step with every
BatchNorm swapped for the identity (a fused BatchNorm+ReLU for a ReLU).

Threads follow OMP_NUM_THREADS (asv.conf.json's env_nobuild matrix) for both
fastbn and NumPy's BLAS; torch, when compared, is set to the same count.
Setup raises NotImplementedError (asv's "skip") while fastbn.nn, its
functional ops or fastbn.optim cannot be imported.
"""
import argparse
import importlib.util
import os

import numpy as np

import fastbn

if __package__:  # asv's benchmark discovery: benchmarks.bench_train
    from . import bn_cases as bc
else:  # run as a script
    import bn_cases as bc

BATCH_MLP, BATCH_CONV = 60, 64
# the real nets: name -> (batch, image shape)
NETS = {"resnet20": (128, (3, 32, 32)), "inception": (64, (1, 28, 28))}
MODELS = ("mlp", "convnet", "digits") + tuple(NETS)


def _lr(kind):
    """The steps' SGD rate: lower for the real nets, whose BN-less variants diverge at
    0.01 on a batch seen over and over (and overflow to inf)."""
    return 1e-3 if kind in NETS else 0.01

# (in channels, out channels, height = width) of the convnet's two 3x3 convs
CONV_LAYERS = [(1, 32, 28), (32, 64, 14)]
TRACK_REPEAT = 15


def _fastbn_api():
    """(nn, F, optim, Tensor) or skip."""
    try:
        import fastbn.nn as nn
        import fastbn.nn.functional as F
        import fastbn.optim as optim
        from fastbn import Tensor
    except ImportError as exc:
        raise NotImplementedError(f"fastbn training API not available: {exc}") from None
    return nn, F, optim, Tensor


def _mlp(nn, bn=True):
    """The paper's MNIST net: 3 x (Linear 100, BatchNorm1d, sigmoid), Linear 10."""
    layers, width = [], 784
    for _ in range(3):
        layers += [nn.Linear(width, 100)] + ([nn.BatchNorm1d(100)] if bn else []) + [nn.Sigmoid()]
        width = 100
    return nn.Sequential(*layers, nn.Linear(100, 10))


def _convnet(nn, bn=True, hw=28):
    """conv3x3(1->32)-BN-ReLU-maxpool-conv3x3(32->64)-BN-ReLU-maxpool-linear(->10)
    on hw x hw images.  fastbn fuses BN+ReLU (BatchNormReLU2d, as the trainer's
    preset); torch has no fused op.  bn=False keeps the ReLU: BN's share is
    measured by swapping BN for identity."""
    def block(cin, cout):
        if not bn:
            act = [nn.ReLU()]
        elif hasattr(nn, "BatchNormReLU2d"):  # fastbn.nn
            act = [nn.BatchNormReLU2d(cout)]
        else:
            act = [nn.BatchNorm2d(cout), nn.ReLU()]
        return [nn.Conv2d(cin, cout, 3, padding=1), *act, nn.MaxPool2d(2)]

    return nn.Sequential(*block(1, 32), *block(32, 64), nn.Flatten(),
                         nn.Linear(64 * (hw // 4) ** 2, 10))


# "digits": the convnet on 8x8 images (the trainer's default data), where the
# per-call costs of small planes count
_IMAGE = {"convnet": 28, "digits": 8}


def _model(nn, kind, bn):
    return _mlp(nn, bn) if kind == "mlp" else _convnet(nn, bn, _IMAGE[kind])


def _torch_models():
    """tests/torch_models.py: the PyTorch definitions fastbn.models follows; skip
    (NotImplementedError) where the checkout's tests are not beside the benchmarks."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests",
                        "torch_models.py")
    if not os.path.exists(path):
        raise NotImplementedError(f"{path} not found: the PyTorch definitions of the nets")
    spec = importlib.util.spec_from_file_location("torch_models", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _without_bn(model, nn, relu_for_fused=False):
    """model with every BatchNorm2d swapped for the identity (a fused BatchNorm+ReLU
    for a ReLU), in place: the step without BN's cost."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if relu_for_fused and isinstance(child, nn.BatchNormReLU2d):
                setattr(module, name, nn.ReLU())
            elif isinstance(child, nn.BatchNorm2d):
                setattr(module, name, nn.Identity())
    return model


def _net(kind, bn, torch=False):
    """A real net (NETS) in fastbn, or in PyTorch; float32, PyTorch's init for both."""
    if torch:
        import torch.nn as nn
        tm = _torch_models()
        model = tm.resnet20() if kind == "resnet20" else tm.InceptionBN()
    else:
        from fastbn import models, nn
        model = models.resnet20() if kind == "resnet20" else models.inception_bn()
    return model if bn else _without_bn(model, nn, relu_for_fused=not torch)


def _batch(kind, rng):
    if kind in NETS:
        batch, shape = NETS[kind]
        x = rng.standard_normal((batch,) + shape).astype(np.float32)
    elif kind == "mlp":
        x = rng.standard_normal((BATCH_MLP, 784)).astype(np.float32)
    else:
        x = rng.standard_normal((BATCH_CONV, 1, _IMAGE[kind], _IMAGE[kind])).astype(np.float32)
    return x, rng.integers(0, 10, len(x))


def _make_step(model, loss_fn, opt, x, y):
    def step():
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss

    return step


def fastbn_step(kind, bn=True, seed=0):
    """One SGD step (zero_grad, forward, loss, backward, update) as a callable."""
    nn, _, optim, Tensor = _fastbn_api()
    model = _net(kind, bn) if kind in NETS else _model(nn, kind, bn)
    model.train()
    x, y = _batch(kind, np.random.default_rng(seed))
    opt = optim.SGD(model.parameters(), lr=_lr(kind), momentum=0.9)
    return _make_step(model, nn.CrossEntropyLoss(), opt, Tensor(x), y)


def torch_step(kind, bn=True, seed=0):
    """The same step in PyTorch; raises ImportError without torch."""
    import torch

    x, y = _batch(kind, np.random.default_rng(seed))
    model = _net(kind, bn, torch=True) if kind in NETS else _model(torch.nn, kind, bn)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=_lr(kind), momentum=0.9)
    return _make_step(model, torch.nn.CrossEntropyLoss(), opt,
                      torch.from_numpy(x), torch.from_numpy(y))


def _mlp_products(seed=0):
    """The MLP step's 11 matrix products, as (a, b, transpose_a, transpose_b):
    each layer's forward x @ W^T, weight gradient g^T @ x and, but for the
    first layer, input gradient g @ W."""
    rng = np.random.default_rng(seed)
    widths = [784, 100, 100, 100, 10]
    out = []
    for i, (n_in, n_out) in enumerate(zip(widths, widths[1:])):
        x, w, g = (rng.standard_normal(s).astype(np.float32)
                   for s in ((BATCH_MLP, n_in), (n_out, n_in), (BATCH_MLP, n_out)))
        out += [(x, w, False, True), (g, x, True, False)] + ([(g, w, False, False)] if i else [])
    return out


def fastbn_mlp_products():
    """The MLP step's products through fastbn.kernels.matmul, as a callable."""
    from fastbn import kernels

    products = _mlp_products()
    return lambda: [kernels.matmul(a, b, ta, tb) for a, b, ta, tb in products]


def torch_mlp_products():
    """The same products through torch.mm; raises ImportError without torch."""
    import torch

    products = [(torch.from_numpy(a), torch.from_numpy(b), ta, tb)
                for a, b, ta, tb in _mlp_products()]
    return lambda: [torch.mm(a.T if ta else a, b.T if tb else b) for a, b, ta, tb in products]


def _skip_without_torch():
    if not bc.torch_available():
        raise NotImplementedError("torch is not importable")


class TrainStep:
    """One training step of the paper's MLP (batch 60) and of the small convnet
    (batch 64, 28x28), with and without BatchNorm."""

    params = [["mlp", "convnet"], [True, False]]
    param_names = ["model", "batchnorm"]

    def setup(self, model, batchnorm):
        self.step = fastbn_step(model, batchnorm)
        self.step()  # warm-up: allocations, momentum buffers

    def time_step(self, model, batchnorm):
        self.step()

    def peakmem_step(self, model, batchnorm):
        self.step()


class TrainStepVsTorch:
    """fastbn step time over the PyTorch step time, alternated in one process
    (below 1 = fastbn faster), and BatchNorm's share of each step's time."""

    params = [["mlp", "convnet", "digits"]]
    param_names = ["model"]
    unit = "ratio"

    def setup(self, model):
        self.fastbn = {bn: fastbn_step(model, bn) for bn in (True, False)}
        _skip_without_torch()
        self.torch = {bn: torch_step(model, bn) for bn in (True, False)}
        self.threads = fastbn.get_num_threads()

    def _medians(self, fns):
        with bc.thread_counts(self.threads):
            return {k: v[0] for k, v in bc.measure(fns, TRACK_REPEAT).items()}

    def track_time_ratio(self, model):
        t = self._medians({"fastbn": self.fastbn[True], "torch": self.torch[True]})
        return t["fastbn"] / t["torch"]

    def track_bn_share_fastbn(self, model):
        t = self._medians({"bn": self.fastbn[True], "none": self.fastbn[False]})
        return 1 - t["none"] / t["bn"]

    def track_bn_share_torch(self, model):
        t = self._medians({"bn": self.torch[True], "none": self.torch[False]})
        return 1 - t["none"] / t["bn"]


class NetStep:
    """One training step of the real nets of fastbn.models: ResNet-20 (batch 128,
    3x32x32) and the small BN-Inception (batch 64, 1x28x28)."""

    params = [list(NETS)]
    param_names = ["model"]
    timeout = 300

    def setup(self, model):
        self.step = fastbn_step(model)
        self.step()  # warm-up: allocations, momentum buffers

    def time_step(self, model):
        self.step()


class NetStepVsTorch:
    """The real nets' fastbn step time over the PyTorch step time (the definitions
    they follow), alternated in one process (below 1 = fastbn faster)."""

    params = [list(NETS)]
    param_names = ["model"]
    unit = "ratio"
    timeout = 600

    def setup(self, model):
        self.fastbn = fastbn_step(model)
        _skip_without_torch()
        self.torch = torch_step(model)
        self.threads = fastbn.get_num_threads()

    def track_time_ratio(self, model):
        with bc.thread_counts(self.threads):
            t = bc.measure({"fastbn": self.fastbn, "torch": self.torch}, 7, warmup=1,
                           block=2)
        return t["fastbn"][0] / t["torch"][0]


class Conv2d:
    """conv2d (3x3, padding 1, batch 64) of the convnet's two layers:
    forward without recording, and forward+backward through the tape."""

    params = [CONV_LAYERS]
    param_names = ["cin_cout_hw"]

    def setup(self, layer):
        _, F, _, Tensor = _fastbn_api()
        cin, cout, hw = layer
        rng = np.random.default_rng(0)
        self.F = F
        self.x = Tensor(rng.standard_normal((BATCH_CONV, cin, hw, hw)).astype(np.float32),
                        requires_grad=True)
        self.w = Tensor(rng.standard_normal((cout, cin, 3, 3)).astype(np.float32) * 0.1,
                        requires_grad=True)
        self.b = Tensor(np.zeros(cout, np.float32), requires_grad=True)
        self.grad = rng.standard_normal((BATCH_CONV, cout, hw, hw)).astype(np.float32)
        self.time_forward_backward(layer)  # warm-up

    def time_forward(self, layer):
        with fastbn.no_grad():
            self.F.conv2d(self.x, self.w, self.b, padding=1)

    def time_forward_backward(self, layer):
        self.x.grad = self.w.grad = self.b.grad = None
        self.F.conv2d(self.x, self.w, self.b, padding=1).backward(self.grad)



class Conv2dAlgorithm:
    """The convnet's conv2d layers through fastbn.kernels by each algorithm:
    forward, and backward (dx, dweight, dbias) from the forward's columns."""

    params = [CONV_LAYERS, ["im2col", "winograd"]]
    param_names = ["cin_cout_hw", "algorithm"]

    def setup(self, layer, algorithm):
        from fastbn import kernels

        cin, cout, hw = layer
        rng = np.random.default_rng(0)
        self.K = kernels
        self.x = rng.standard_normal((BATCH_CONV, cin, hw, hw)).astype(np.float32)
        self.w = (rng.standard_normal((cout, cin, 3, 3)) * 0.1).astype(np.float32)
        self.b = np.zeros(cout, np.float32)
        y, self.cols = kernels.conv2d_forward(self.x, self.w, self.b, padding=1,
                                              algorithm=algorithm)
        self.dy = rng.standard_normal(y.shape).astype(np.float32)

    def time_forward(self, layer, algorithm):
        self.K.conv2d_forward(self.x, self.w, self.b, padding=1, algorithm=algorithm)

    def time_backward(self, layer, algorithm):
        self.K.conv2d_backward(self.dy, self.x, self.w, self.cols, padding=1,
                               algorithm=algorithm)


class Matmul:
    """fastbn.kernels.matmul on the MLP's products (its linear layers): a
    forward x @ W^T and a weight gradient g^T @ x of the 784->100 layer, and a
    100->100 forward."""

    # name: (op(a) rows, inner, op(b) columns, transpose_a, transpose_b)
    PRODUCTS = {"fwd 60x784x100": (60, 784, 100, False, True),
                "wgrad 100x60x784": (100, 60, 784, True, False),
                "fwd 60x100x100": (60, 100, 100, False, True)}
    params = [list(PRODUCTS)]
    param_names = ["product"]

    def setup(self, product):
        from fastbn import kernels

        m, k, n, ta, tb = self.PRODUCTS[product]
        rng = np.random.default_rng(0)
        self.a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
        self.b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
        self.call = lambda: kernels.matmul(self.a, self.b, transpose_a=ta, transpose_b=tb)
        self.call()

    def time_matmul(self, product):
        self.call()


class DefaultTrainStep:
    """One step of ``python -m fastbn train``'s default job: the convnet preset
    (fused BatchNormReLU2d) on the embedded 8x8 digits, batch 64, SGD with
    momentum.  Small planes: per-call costs count here."""

    def setup(self):
        nn, _, optim, Tensor = _fastbn_api()
        from fastbn import train

        x, y = train.load_data("digits")[:2]
        model = train.convnet(x.shape[1:])
        model.train()
        opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        self.step = _make_step(model, nn.CrossEntropyLoss(), opt,
                               Tensor(np.ascontiguousarray(x[:BATCH_CONV])), y[:BATCH_CONV])
        self.step()  # warm-up

    def time_step(self):
        self.step()


class OptimizerStep:
    """optimizer.step() over the MLP's 14 parameters (one compiled call for all)."""

    params = [["sgd", "adam"]]
    param_names = ["optimizer"]

    def setup(self, optimizer):
        nn, _, optim, _ = _fastbn_api()
        rng = np.random.default_rng(0)
        params = list(_mlp(nn).parameters())
        for p in params:
            p.grad = rng.standard_normal(p.data.shape).astype(p.data.dtype)
        self.opt = (optim.SGD(params, lr=0.01, momentum=0.9) if optimizer == "sgd" else
                    optim.Adam(params, lr=1e-3))
        self.opt.step()  # warm-up: the state's buffers

    def time_step(self, optimizer):
        self.opt.step()


def main():
    ap = argparse.ArgumentParser(description="Training steps, fastbn vs PyTorch")
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    ap.add_argument("--cache", choices=sorted(bc.CACHE_BLOCKS), default="warm",
                    help="warm: turns of back-to-back steps, as in a training loop (default); "
                         "cold: one step per turn")
    args = ap.parse_args()
    from threadpoolctl import threadpool_limits

    have_torch = bc.torch_available()
    products = []
    print("| model | threads | fastbn ms | torch ms | fastbn / torch | BN share fastbn "
          "| BN share torch |\n|---|---|---:|---:|---:|---:|---:|")
    for threads in args.threads:
        for model in args.models:
            fns = {("fastbn", bn): fastbn_step(model, bn) for bn in (True, False)}
            if have_torch:
                fns.update({("torch", bn): torch_step(model, bn) for bn in (True, False)})
            if model == "mlp":  # its matrix products alone, alternated with the steps
                fns["fastbn", "products"] = fastbn_mlp_products()
                if have_torch:
                    fns["torch", "products"] = torch_mlp_products()
            with threadpool_limits(threads, user_api="blas"), bc.thread_counts(threads):
                t = {k: v[0] * 1e3 for k, v in
                     bc.measure(fns, args.repeat, block=bc.CACHE_BLOCKS[args.cache]).items()}
            f, share_f = t["fastbn", True], 1 - t["fastbn", False] / t["fastbn", True]
            if have_torch:
                tt, share_t = t["torch", True], 1 - t["torch", False] / t["torch", True]
                rest = f"{tt:.2f} | {f / tt:.2f} | {share_f:.1%} | {share_t:.1%}"
            else:
                rest = f"- | - | {share_f:.1%} | -"
            print(f"| {model} | {threads} | {f:.2f} | {rest} |", flush=True)
            if model == "mlp":
                products.append((threads, t))
    print("\nThe MLP step's 11 matrix products alone, ms (share of that library's step):\n\n"
          "| threads | fastbn | torch |\n|---|---:|---:|")
    for threads, t in products:
        cells = [f"{t[lib, 'products']:.3f} ({t[lib, 'products'] / t[lib, True]:.0%})"
                 if (lib, "products") in t else "-" for lib in ("fastbn", "torch")]
        print(f"| {threads} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
