"""Multi-process training: torchrun + PyTorch FSDP2 (`fully_shard`), NCCL on GPUs, gloo on CPUs.

    torchrun --nproc-per-node 8 -m molmo_edge train --recipe finetune --init-from CKPT --data d.jsonl

Every process runs the same trainer. `setup()` reads torchrun's environment (RANK, WORLD_SIZE,
LOCAL_RANK), joins the process group and returns a `DistContext`; without torchrun it returns a
single-process context and nothing is initialised, so the same code path serves both.

Sharding (FSDP2): every ViT block and every decoder layer is its own FSDP unit (its parameters are
gathered just before it runs and freed after), and the root module owns the rest (embeddings,
connector, lm_head). Gradients are reduce-scattered and *averaged* over ranks, which is why the
loss on each rank is normalised by the global weight sum / world size (token_weights.py).

Full (unsharded) state dicts for saving go through torch.distributed.checkpoint's state-dict
helpers, which gather to rank 0 on CPU; they work on unsharded modules too.
"""
from __future__ import annotations

import datetime
import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from molmo_edge.errors import ConfigError


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False  # setup() created the process group, so teardown() destroys it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device: str = "auto", timeout_s: float = 600.0) -> DistContext:
    """Join torchrun's process group when launched by torchrun; otherwise a 1-process context.

    device: "auto" (CUDA if available, else CPU), "cpu" or "cuda". The backend follows the device:
    NCCL for CUDA, gloo for CPU.
    """
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but CUDA is not available here; use --device cpu")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world_size == 1:
        return DistContext(device=dev)
    created = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo",
                                timeout=datetime.timedelta(seconds=timeout_s))
        created = True
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=dev,
                       initialized_here=created)


def teardown(ctx: DistContext) -> None:
    if ctx.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(value: float | torch.Tensor, ctx: DistContext) -> float:
    """Sum a number over all ranks (a no-op in one process). Returns a Python float."""
    if not ctx.distributed:
        return float(value)
    tensor = torch.as_tensor(value, dtype=torch.float64, device=ctx.device if ctx.device.type == "cuda" else "cpu")
    tensor = tensor.clone().reshape(1)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return float(tensor.item())


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def broadcast_object(obj, ctx: DistContext):
    """Rank 0's Python object on every rank."""
    if not ctx.distributed:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def shard_model(model: nn.Module, ctx: DistContext, mixed_precision: torch.dtype | None = None) -> nn.Module:
    """Apply FSDP2 to the model in place: one unit per ViT block and decoder layer, plus the root.

    mixed_precision: parameters are all-gathered and computed in this dtype (e.g. bf16) while the
    sharded fp32 master copy is what the optimizer updates; gradients are reduced in fp32.
    """
    if not ctx.distributed:
        return model
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    # Decoder layers also return their KV cache (views of k / v); training never uses it, so the
    # FSDP2 warning about in-place ops on returned views does not apply.
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
    mesh = init_device_mesh(ctx.device.type, (ctx.world_size,))
    policy = (MixedPrecisionPolicy(param_dtype=mixed_precision, reduce_dtype=torch.float32)
              if mixed_precision is not None else MixedPrecisionPolicy())
    for name, module in model.named_modules():
        parent = name.rpartition(".")[0]
        if parent.endswith("layers") and name.rpartition(".")[2].isdigit():  # vision.layers.N / decoder.layers.N
            fully_shard(module, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


def full_model_state_dict(model: nn.Module, ctx: DistContext) -> dict[str, torch.Tensor]:
    """The unsharded state dict on CPU, on rank 0 (empty dict on other ranks)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    if not ctx.distributed:
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def full_optimizer_state_dict(model: nn.Module, optimizer: torch.optim.Optimizer, ctx: DistContext) -> dict:
    """The unsharded optimizer state keyed by parameter names (rank 0; empty elsewhere)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer,
                                    options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_optimizer_state_dict(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict,
                                   ctx: DistContext) -> None:
    """Inverse of full_optimizer_state_dict; rank 0's `state` is broadcast to the shards."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, optim_state_dict=state,
                             options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=ctx.distributed))
