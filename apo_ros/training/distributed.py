"""Data-parallel training: torch DistributedDataParallel under torchrun or `accelerate launch`.

Every process draws the SAME global batch (`batch_size x processes` rows, from the same seeded
sampler) and trains on its own contiguous slice of it; DDP averages the gradients during
backward. So a run on N processes computes what one process computes on the whole global batch:
the objectives are per-sample means or (APO) means over micro-groups of 8 rows, and a batch-level
statistic - KTO / APO's z0 - is averaged across processes before it is clamped, as TRL does with
`accelerator.gather`. A two-process test compares the loss and the gradients with one process.

The objectives call policy methods (`token_logps`, `encode_observation`, ...) rather than one
`forward`, so what DDP wraps is `StepModule`: its forward runs one training step's loss on the
policy it holds, which lets DDP's reducer see the backward of every step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass
class Distributed:
    """Where this process stands in the run (rank 0 of 1 when not launched distributed)."""

    rank: int = 0
    world: int = 1
    device: torch.device | None = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    def rows(self, batch) -> slice:
        """This process's slice of a global batch of len(batch) = world x per-process rows."""
        per = len(batch) // self.world
        return slice(self.rank * per, (self.rank + 1) * per)

    def mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """The mean of a detached `tensor` over processes (a new tensor; itself when not distributed)."""
        if not self.enabled:
            return tensor
        import torch.distributed as dist

        out = tensor.detach().clone()
        dist.all_reduce(out)
        return out / self.world

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def broadcast_flag(self, flag: bool) -> bool:
        """Rank 0's decision, so every process takes the same branch."""
        if not self.enabled:
            return flag
        import torch.distributed as dist

        t = torch.tensor([1 if flag else 0], device=self.device or "cpu")
        dist.broadcast(t, 0)
        return bool(t.item())


def setup_distributed() -> Distributed:
    """Join the process group that torchrun / accelerate describe in the environment
    (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR...), or a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank()
    device = None
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", rank))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    return Distributed(rank, dist.get_world_size(), device)


class StepModule(torch.nn.Module):
    """One training step's loss as a module forward: `step_fn(rows, step)` ->
    (loss, metrics, samples used), computed with `policy` (registered as a submodule, so DDP
    finds its trainable parameters)."""

    def __init__(self, policy: torch.nn.Module, step_fn):
        super().__init__()
        self.policy = policy
        self.step_fn = step_fn

    def forward(self, rows, step: int):
        return self.step_fn(rows, step)


def wrap_step(policy: torch.nn.Module, step_fn, dist_info: Distributed):
    """A callable (rows, step) -> (loss, metrics, used) whose backward all-reduces the gradients
    of the policy's trainable parameters across processes (DDP); the plain step function when
    not distributed. Every rank starts from rank 0's weights (DDP broadcasts them)."""
    module = StepModule(policy, step_fn)
    if not dist_info.enabled:
        return module
    from torch.nn.parallel import DistributedDataParallel

    cuda = dist_info.device is not None and dist_info.device.type == "cuda"
    ids = [dist_info.device.index] if cuda else None
    return DistributedDataParallel(module, device_ids=ids, broadcast_buffers=False)
