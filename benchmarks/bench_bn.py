"""asv benchmarks of the Batch Normalization kernels (fastbn.kernels).

Thread counts are a parameter, set explicitly with fastbn.set_num_threads in
setup.  When OMP_NUM_THREADS is set (asv.conf.json's env_nobuild matrix), only
the matching thread count runs, so no combination is measured twice.
"""

import fastbn

from . import bn_cases as bc

SHAPES = bc.SHAPES
THREADS = [1, 2]
# Repeats inside a track_ measurement (alternated, median).
TRACK_REPEAT = 25


class _ThreadedBase:
    def teardown(self, *params):
        fastbn.set_num_threads(None)


class BatchNorm(_ThreadedBase):
    """Median time of one call: training forward, forward+backward, inference forward."""

    params = [SHAPES, ["float32", "float64"], THREADS]
    param_names = ["shape", "dtype", "threads"]

    def setup(self, shape, dtype, threads):
        bc.use_threads(threads)
        self.ops = bc.fastbn_ops(bc.Inputs(shape, dtype))
        for fn in self.ops.values():  # warm-up: first-touch pages, OpenMP team
            fn()

    def time_train_forward(self, shape, dtype, threads):
        self.ops["train_fwd"]()

    def time_train_forward_backward(self, shape, dtype, threads):
        self.ops["train_fwd_bwd"]()

    def time_eval_forward(self, shape, dtype, threads):
        self.ops["eval_fwd"]()


class BatchNormMemory(_ThreadedBase):
    """Peak resident memory of a process running a training forward+backward."""

    params = [SHAPES, THREADS]
    param_names = ["shape", "threads"]

    def setup(self, shape, threads):
        bc.use_threads(threads)
        self.ops = bc.fastbn_ops(bc.Inputs(shape, "float32"))

    def peakmem_train_forward_backward(self, shape, threads):
        self.ops["train_fwd_bwd"]()


class BatchNormBandwidth(_ThreadedBase):
    """Achieved GB/s (minimum passes x bytes / time) over the GB/s of a same-run
    np.copyto of the same size on as many threads; 1.0 = the streaming roof."""

    params = [SHAPES, list(bc.OPS), THREADS]
    param_names = ["shape", "op", "threads"]
    unit = "fraction of copy"

    def setup(self, shape, op, threads):
        bc.use_threads(threads)
        self.inputs = bc.Inputs(shape, "float32")
        self.fn = bc.fastbn_ops(self.inputs)[op]
        self.copy = bc.StreamingCopy(self.inputs.x, threads)

    def teardown(self, shape, op, threads):
        if hasattr(self, "copy"):  # asv calls teardown after a skipped setup too
            self.copy.close()
        super().teardown()

    def track_bandwidth_efficiency(self, shape, op, threads):
        res = bc.measure({"fastbn": self.fn, "copy": self.copy}, TRACK_REPEAT)
        return bc.bandwidth_efficiency(op, res["fastbn"][0], self.inputs.nbytes, res["copy"][0])


class BatchNormVsTorch(_ThreadedBase):
    """fastbn time over torch.nn.functional.batch_norm time (autograd for
    training), alternated in one process; below 1 = fastbn faster."""

    params = [SHAPES, list(bc.OPS), THREADS]
    param_names = ["shape", "op", "threads"]
    unit = "fastbn/torch time"

    def setup(self, shape, op, threads):
        if not bc.torch_available():
            raise NotImplementedError("torch is not importable")
        bc.use_threads(threads)
        inputs = bc.Inputs(shape, "float32")
        self.fns = {"fastbn": bc.fastbn_ops(inputs)[op], "torch": bc.torch_ops(inputs)[op]}

    def track_time_ratio(self, shape, op, threads):
        with bc.thread_counts(threads):
            res = bc.measure(self.fns, TRACK_REPEAT)
        return res["fastbn"][0] / res["torch"][0]
