"""fastbn.distributed and SyncBatchNorm.  The multi-rank tests launch the scripts in
tests/mpi_scripts/ with ``mpiexec -n 2`` and ``-n 3`` and compare each rank's results with
single-process float64 NumPy references computed here on the concatenated batch."""
import io
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import fastbn
from fastbn import cli, distributed, nn, optim, train
from fastbn.tensor import Tensor

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = os.path.join(HERE, "mpi_scripts")
FASTBN_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(fastbn.__file__)))
TIMEOUT = 120


def _mpiexec(n):
    pytest.importorskip("mpi4py", reason="mpi4py is not installed: pip install 'fastbn[mpi]'")
    try:
        return distributed.mpiexec_command(n)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


def _mpirun(n, *argv, timeout=TIMEOUT, cwd=None):
    """Run ``mpiexec -n n python ARGV`` with one thread per rank; returns the process."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(p for p in (FASTBN_PARENT,
                                                       os.environ.get("PYTHONPATH")) if p))
    return subprocess.run([*_mpiexec(n), sys.executable, *argv], capture_output=True,
                          text=True, env=env, timeout=timeout, cwd=cwd)


# -- references ------------------------------------------------------------------------------

def _bn_reference(x, dy, w, b, rm, rv, momentum, eps=1e-5):
    """Training-mode BatchNorm on the whole batch, float64, written out plainly."""
    x, dy = x.astype(np.float64), dy.astype(np.float64)
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    m = x.size // x.shape[1]
    mean, var = x.mean(axis=axes), x.var(axis=axes)
    invstd = 1 / np.sqrt(var + eps)
    xhat = (x - mean.reshape(shape)) * invstd.reshape(shape)
    y = xhat * w.reshape(shape) + b.reshape(shape)
    db, dw = dy.sum(axis=axes), (dy * xhat).sum(axis=axes)
    dx = (w * invstd).reshape(shape) / m * (m * dy - db.reshape(shape) - xhat * dw.reshape(shape))
    return dict(y=y, dx=dx, dw=dw, db=db, rm=(1 - momentum) * rm + momentum * mean,
                rv=(1 - momentum) * rv + momentum * var * m / (m - 1))


def _bn_cases(rng, specs):
    """specs: (dtype, per-rank sizes, per-sample shape (C, *spatial)); one case each."""
    cases = {"num_bn_cases": np.array(len(specs))}
    for k, (dtype, sizes, sample) in enumerate(specs):
        N, C = sum(sizes), sample[0]
        offset = rng.uniform(-5, 5, (1, C) + (1,) * (len(sample) - 1))  # means far from 0

        def draw(shape, lo=None):
            a = rng.standard_normal(shape) if lo is None else rng.uniform(lo, 2, shape)
            return a.astype(dtype)
        cases.update({
            f"sizes{k}": np.array(sizes), f"momentum{k}": np.array(rng.uniform(0.05, 0.5)),
            f"x{k}": (rng.standard_normal((N, *sample)) * 3 + offset).astype(dtype),
            f"dy{k}": draw((N, *sample)), f"w{k}": draw(C, 0.5), f"b{k}": draw(C),
            f"rm{k}": draw(C), f"rv{k}": draw(C, 0.5)})
    return cases


def _check_bn_cases(cases, ranks):
    for k in range(int(cases["num_bn_cases"])):
        sizes = cases[f"sizes{k}"]
        ref = _bn_reference(cases[f"x{k}"], cases[f"dy{k}"], cases[f"w{k}"].astype(np.float64),
                            cases[f"b{k}"].astype(np.float64), cases[f"rm{k}"].astype(np.float64),
                            cases[f"rv{k}"].astype(np.float64), float(cases[f"momentum{k}"]))
        tol = dict(rtol=1e-4, atol=1e-4) if cases[f"x{k}"].dtype == np.float32 else \
            dict(rtol=1e-10, atol=1e-10)
        bounds = np.concatenate(([0], np.cumsum(sizes)))
        for r, res in enumerate(ranks):
            rows = slice(bounds[r], bounds[r + 1])
            assert res[f"y{k}"].shape == ref["y"][rows].shape
            np.testing.assert_allclose(res[f"y{k}"], ref["y"][rows], **tol, err_msg=f"case {k} y")
            np.testing.assert_allclose(res[f"dx{k}"], ref["dx"][rows], **tol,
                                       err_msg=f"case {k} rank {r} dx")
            # running statistics: the global ones, on every rank
            np.testing.assert_allclose(res[f"rm{k}"], ref["rm"], **tol)
            np.testing.assert_allclose(res[f"rv{k}"], ref["rv"], **tol)
            assert int(res[f"nbt{k}"]) == 1
        # dweight / dbias are each rank's share (PyTorch's convention; DDP averages them):
        # they sum to the whole batch's
        np.testing.assert_allclose(sum(res[f"dw{k}"] for res in ranks), ref["dw"], **tol)
        np.testing.assert_allclose(sum(res[f"db{k}"] for res in ranks), ref["db"], **tol)


def _ddp_case(rng, steps=2, batch=12):   # batch: divisible by 2 and 3
    return {"ddp_seed": np.array(int(rng.integers(1000))),
            "ddp_x": rng.standard_normal((steps, batch, 6)) * 2,
            "ddp_y": rng.integers(0, 3, (steps, batch))}


def _ddp_reference(cases):
    """The same steps in one process on the whole batch, with plain BatchNorm."""
    fastbn.manual_seed(int(cases["ddp_seed"]))
    model = nn.Sequential(nn.Linear(6, 8, bias=False), nn.BatchNorm1d(8), nn.ReLU(),
                          nn.Linear(8, 3)).double()
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for x, labels in zip(cases["ddp_x"], cases["ddp_y"]):
        loss = nn.CrossEntropyLoss()(model(Tensor(x)), Tensor(labels))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.state_dict()


def _run_cases(tmp_path, world, cases):
    np.savez(tmp_path / "in.npz", **cases)
    proc = _mpirun(world, os.path.join(SCRIPTS, "syncbn_ddp.py"), str(tmp_path / "in.npz"),
                   str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [dict(np.load(tmp_path / f"rank{r}.npz")) for r in range(world)]


def test_two_ranks_syncbn_and_ddp_match_one_process(tmp_path):
    rng = np.random.default_rng()
    cases = _bn_cases(rng, [(np.float64, [4, 2], (3, 5, 4)),     # uneven, 4-D
                            (np.float32, [7, 9], (5,)),          # float32, 2-D
                            (np.float64, [6, 6], (4, 7))])       # even, 3-D
    cases.update(_ddp_case(rng))
    ranks = _run_cases(tmp_path, 2, cases)
    _check_bn_cases(cases, ranks)
    ref = _ddp_reference(cases)
    for r, res in enumerate(ranks):
        assert int(res["ddp_num_buckets"]) > 1      # the tiny cap forces several buckets
        for key, value in ref.items():
            np.testing.assert_allclose(res[f"ddp.{key}"], value, rtol=1e-10, atol=1e-12,
                                       err_msg=f"rank {r}: {key} after the DDP steps")


def test_three_ranks_uneven_and_empty_shards(tmp_path):
    rng = np.random.default_rng()
    # rank 0 holds a single sample (plain BatchNorm would refuse it), rank 2 none at all
    cases = _bn_cases(rng, [(np.float64, [1, 6, 0], (4,)),
                            (np.float32, [5, 0, 3], (2, 3, 3)),
                            (np.float64, [0, 0, 5], (3, 2))])
    cases.update(_ddp_case(rng))
    ranks = _run_cases(tmp_path, 3, cases)
    _check_bn_cases(cases, ranks)
    ref = _ddp_reference(cases)
    for res in ranks:
        for key, value in ref.items():
            np.testing.assert_allclose(res[f"ddp.{key}"], value, rtol=1e-10, atol=1e-12)


def test_a_failing_rank_stops_the_job():
    t0 = time.perf_counter()
    proc = _mpirun(2, os.path.join(SCRIPTS, "raise_on_one_rank.py"), timeout=60)
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "deliberate failure on rank 1" in output
    assert "[fastbn rank 1] uncaught exception, aborting the MPI job" in output
    assert time.perf_counter() - t0 < 60


@pytest.mark.parametrize("world, how", [
    (2, "exit"), (3, "exit"), (2, "exit3"), (3, "end"), (2, "caught-interrupt"),
    (3, "exception"), (2, "sigterm"), (2, "os-exit")])
def test_every_way_a_rank_leaves_ends_the_job(world, how):
    """On main a rank's sys.exit() (any status), or the end of its script, left the
    others in their allreduce forever, at 2 and 3 ranks."""
    t0 = time.perf_counter()
    proc = _mpirun(world, os.path.join(SCRIPTS, "leave_early.py"), how, timeout=60)
    seconds = time.perf_counter() - t0
    output = proc.stdout + proc.stderr
    assert "the second allreduce completed" not in output
    if how != "os-exit":  # a process gone without a word: MPICH ends the job, status 0
        assert proc.returncode != 0, output
    if how in ("exit", "exit3", "end", "caught-interrupt"):
        assert (f"[fastbn rank {world - 1}] exiting while rank(s) "
                f"{', '.join(map(str, range(world - 1)))} still wait in MPI calls") in output
    assert seconds < 30, seconds


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_that_finish_apart_end_the_job_normally(world):
    """Every rank exits, rank 0 four seconds after the others (outside MPI, longer
    than the probes take): the job waits for it, then exits 0."""
    proc = _mpirun(world, os.path.join(SCRIPTS, "leave_early.py"), "late", "4", timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # mpiexec merges the ranks' output, not always line by line
    assert all(proc.stdout.count(f"rank {r} done") == 1 for r in range(world)), proc.stdout
    assert "aborting" not in proc.stderr
    t0 = time.perf_counter()
    proc = _mpirun(world, os.path.join(SCRIPTS, "leave_early.py"), "late", "0", timeout=60)
    assert proc.returncode == 0 and time.perf_counter() - t0 < 20


def test_cli_rank_that_exits_mid_training_ends_the_job():
    t0 = time.perf_counter()
    proc = _mpirun(2, os.path.join(SCRIPTS, "train_exits.py"), "--distributed", "--model",
                   "mlp", "--batch-size", "48", "--epochs", "3", timeout=120)
    assert proc.returncode != 0
    assert "[fastbn rank 1] exiting while rank(s) 0 still wait in MPI calls" in proc.stderr
    assert time.perf_counter() - t0 < 60


def test_cli_distributed_resume_is_exact_and_one_rank_writes(tmp_path):
    common = ["--distributed", "--model", "mlp", "--batch-size", "48", "--seed", "1",
              "--epochs", "2"]
    full = _mpirun(2, "-m", "fastbn", "train", *common, "--metrics-json", "full.json",
                   cwd=tmp_path)
    assert full.returncode == 0, full.stdout + full.stderr
    # one rank speaks: one header, one line per epoch, one result
    assert full.stdout.count("held-out accuracy") == 1, full.stdout
    assert full.stdout.count("epoch 2/2") == 1 and "2 ranks" in full.stdout
    m = json.loads((tmp_path / "full.json").read_text())
    # each rank has ceil(1437 / 2) = 719 samples: 719 // 24 = 29 steps of the global batch
    assert m["steps"] == 2 * 29 and m["world_size"] == 2 and len(m["losses"]) == 58
    assert 0.5 < m["test_accuracy"] <= 1
    # rank r's shard interleaves the epoch's permutation, so the ranks' batches together
    # are the single-process run's batches: with SyncBatchNorm the runs agree
    args = cli.build_parser().parse_args(["train", *common[1:], "--threads", "1", "--quiet"])
    single = train.run(args, out=io.StringIO())
    np.testing.assert_allclose(m["losses"], single["losses"], rtol=2e-4)
    assert abs(m["test_accuracy"] - single["test_accuracy"]) <= 2 / 360

    ckpt = tmp_path / "run.ckpt"
    broken = _mpirun(2, os.path.join(SCRIPTS, "train_interrupted.py"), *common,
                     "--checkpoint", str(ckpt), cwd=tmp_path)
    assert broken.returncode != 0 and (f"interrupted after epoch 1; resume with: mpiexec -n 2 "
                                       f"python -m fastbn train --resume {ckpt} --distributed"
                                       in broken.stderr), broken.stderr
    assert ckpt.exists() and not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    resumed = _mpirun(2, "-m", "fastbn", "train", *common, "--resume", str(ckpt),
                      "--metrics-json", "resumed.json", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resumed from" in resumed.stdout
    r = json.loads((tmp_path / "resumed.json").read_text())
    assert r["losses"] == m["losses"] and r["test_accuracy"] == m["test_accuracy"]

    # the checkpoint records its world size: another one is refused, on every rank
    other = _mpirun(3, "-m", "fastbn", "train", *common, "--resume", str(ckpt), cwd=tmp_path)
    assert other.returncode != 0 and "was trained on 2 MPI ranks, this run has 3" in other.stderr, \
        other.stderr


# -- in-process: no MPI job needed -----------------------------------------------------------

def _torch_sampler_indices(n, replicas, rank, drop_last):
    torch = pytest.importorskip("torch")
    ds = torch.utils.data.TensorDataset(torch.zeros(n))
    return list(torch.utils.data.DistributedSampler(ds, replicas, rank, shuffle=False,
                                                    drop_last=drop_last))


@pytest.mark.parametrize("n, replicas", [(10, 3), (9, 3), (2, 4), (11, 4)])
@pytest.mark.parametrize("drop_last", [False, True])
def test_sampler_shards(n, replicas, drop_last):
    if drop_last and n < replicas:
        return
    data = list(range(n))
    shards = [list(distributed.DistributedSampler(data, replicas, r, shuffle=True, seed=5,
                                                  drop_last=drop_last))
              for r in range(replicas)]
    lengths = {len(s) for s in shards}
    assert len(lengths) == 1        # equal shard lengths
    flat = sorted(i for s in shards for i in s)
    if drop_last:
        assert len(flat) == n // replicas * replicas and len(set(flat)) == len(flat)
    else:
        expect = -(-n // replicas) * replicas
        assert len(flat) == expect and set(flat) == set(range(n))  # all, padded by repeats
    # unshuffled: rank r takes r, r + replicas, ...; padding repeats the start
    order = (list(range(n)) * (replicas + 1))[:lengths.pop() * replicas]
    for r in range(replicas):
        plain = list(distributed.DistributedSampler(data, replicas, r, shuffle=False,
                                                    drop_last=drop_last))
        assert plain == order[r::replicas]


def test_sampler_matches_torch_unshuffled():
    for n, replicas, drop_last in [(10, 3, False), (10, 3, True), (7, 4, False)]:
        for r in range(replicas):
            ours = list(distributed.DistributedSampler(list(range(n)), replicas, r,
                                                       shuffle=False, drop_last=drop_last))
            assert ours == _torch_sampler_indices(n, replicas, r, drop_last)


def test_sampler_reshuffles_per_epoch():
    data = list(range(50))
    sampler = distributed.DistributedSampler(data, 2, 1, seed=3)
    first = list(sampler)
    assert list(sampler) == first                   # same epoch, same order
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first and len(second) == 25
    other = distributed.DistributedSampler(data, 2, 0, seed=3)
    other.set_epoch(1)
    assert sorted(second + list(other)) == data      # ranks of one epoch partition the data


def test_sampler_rejects_bad_arguments():
    with pytest.raises(ValueError, match="rank 2 is out of range"):
        distributed.DistributedSampler(range(4), 2, 2)
    with pytest.raises(ValueError, match="num_replicas"):
        distributed.DistributedSampler(range(4), 0, 0)


def test_convert_sync_batchnorm_shares_state_and_falls_back_to_batchnorm():
    rng = np.random.default_rng()
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6, momentum=None),
                          nn.Sequential(nn.ReLU(), nn.BatchNorm1d(6)))
    keys = list(model.state_dict())
    params = [id(p) for p in model.parameters()]
    model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert isinstance(model[1], nn.SyncBatchNorm) and isinstance(model[2][1], nn.SyncBatchNorm)
    assert model[1].momentum is None
    assert list(model.state_dict()) == keys and [id(p) for p in model.parameters()] == params
    # no process group: plain BatchNorm, checked against the reference
    x = rng.standard_normal((9, 6))
    bn = nn.SyncBatchNorm(6, dtype=np.float64)
    xt = Tensor(x, requires_grad=True)
    dy = rng.standard_normal(x.shape)
    bn(xt).backward(dy)
    ref = _bn_reference(x, dy, np.ones(6), np.zeros(6), np.zeros(6), np.ones(6), 0.1)
    np.testing.assert_allclose(xt.grad, ref["dx"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(bn.running_var, ref["rv"], rtol=1e-12)


def test_distributed_needs_a_communicator():
    if distributed.is_initialized():
        pytest.skip("a process group is set in this process")
    with pytest.raises(RuntimeError, match="init_process_group"):
        distributed.DistributedDataParallel(nn.Linear(2, 2))
    assert distributed.get_rank() == 0 and distributed.get_world_size() == 1


def test_average_gradients_checks_its_arguments_with_one_rank():
    class OneRank:  # the communicator's only call on one rank
        def Get_size(self):
            return 1

    layer = nn.Linear(3, 2)
    layer.weight.grad = np.random.default_rng(5).standard_normal((2, 3)).astype(np.float32)
    grad = layer.weight.grad.copy()
    with pytest.raises(ValueError, match="bucket_cap_mb"):
        distributed.average_gradients(layer.parameters(), OneRank(), bucket_cap_mb=0)
    with pytest.raises(ValueError, match="twice"):
        distributed.average_gradients([layer.weight, layer.weight], OneRank())
    distributed.average_gradients(layer.parameters(), OneRank())
    np.testing.assert_array_equal(layer.weight.grad, grad)
