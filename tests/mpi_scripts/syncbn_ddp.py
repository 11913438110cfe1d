"""Run by tests/test_distributed.py under mpiexec: SyncBatchNorm and one
DistributedDataParallel run on this rank's shard of the cases in IN_NPZ; writes this
rank's results to OUT_DIR/rank<r>.npz for the test to compare with single-process
references.  Usage: syncbn_ddp.py IN_NPZ OUT_DIR"""
import sys

import numpy as np

import fastbn
from fastbn import distributed, nn, optim
from fastbn.tensor import Tensor

comm = distributed.init_process_group()
rank, world = comm.Get_rank(), comm.Get_size()
cases = dict(np.load(sys.argv[1]))
out = {}


def shard(a, sizes):
    start = int(np.sum(sizes[:rank]))
    return a[start:start + int(sizes[rank])]


# -- SyncBatchNorm: forward, running stats, backward ----------------------------------------
for k in range(int(cases["num_bn_cases"])):
    sizes = cases[f"sizes{k}"]
    assert len(sizes) == world, f"case {k} is for {len(sizes)} ranks, this job has {world}"
    x = shard(cases[f"x{k}"], sizes)
    dy = shard(cases[f"dy{k}"], sizes)
    C = x.shape[1]
    bn = nn.SyncBatchNorm(C, momentum=float(cases[f"momentum{k}"]), dtype=x.dtype)
    bn.weight.data[...] = cases[f"w{k}"]
    bn.bias.data[...] = cases[f"b{k}"]
    bn.running_mean[...] = cases[f"rm{k}"]
    bn.running_var[...] = cases[f"rv{k}"]
    xt = Tensor(x, requires_grad=True)
    y = bn(xt)
    y.backward(dy)
    out.update({f"y{k}": y.data, f"dx{k}": xt.grad, f"dw{k}": bn.weight.grad,
                f"db{k}": bn.bias.grad, f"rm{k}": bn.running_mean, f"rv{k}": bn.running_var,
                f"nbt{k}": bn.num_batches_tracked})

# -- DistributedDataParallel: SGD steps on equal shards --------------------------------------
if "ddp_x" in cases:
    fastbn.manual_seed(int(cases["ddp_seed"]) + rank)  # ranks start apart: the broadcast aligns
    model = nn.Sequential(nn.Linear(6, 8, bias=False), nn.BatchNorm1d(8), nn.ReLU(),
                          nn.Linear(8, 3)).double()
    model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ddp = distributed.DistributedDataParallel(model, bucket_cap_mb=100 / 2 ** 20)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    for x, labels in zip(cases["ddp_x"], cases["ddp_y"]):
        sizes = [len(x) // world] * world
        loss = loss_fn(ddp(Tensor(shard(x, sizes))), Tensor(shard(labels, sizes)))
        opt.zero_grad()
        loss.backward()
        ddp.allreduce_gradients()
        opt.step()
    out.update({f"ddp.{key}": value for key, value in model.state_dict().items()})
    out["ddp_num_buckets"] = np.array(ddp.num_buckets)

np.savez(f"{sys.argv[2]}/rank{rank}.npz", **out)
