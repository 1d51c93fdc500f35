"""Ulysses sequence parallelism for the video transformer (DeepSpeed-Ulysses, Jacobs et al. 2023).

A sequence-parallel (SP) group of P ranks runs the same clips together, each rank holding 1/P of every
clip's tokens: the DiT's spatial tokens of each frame (``TokenShards``). Its spatial attention, the one
layer that needs every token of a frame, trades sequence for heads with an all-to-all before it and back
after it (``UlyssesAttention``): each rank then attends over the whole frame for heads/P of the heads.
Temporal attention (across frames at one position) and caption cross-attention are local. After the final
layer the tokens are all-gathered, so the family's loss sees whole clips, as without SP.

Gradients: a rank's gradient of every parameter is the share of its tokens, so the SP group sums them
(``sum_gradients``, the strategies call it before clipping) and the data-parallel strategy (DDP or FSDP2
on the mesh's "dp" dimension) averages over replicas as always.

Data: each rank reads its own micro-batch; the SP group all-gathers them (``group_micro_batches``) and
trains on each of the P micro-batches in turn, together, accumulating gradients over them. A rank then holds
1/P of a micro-batch's activations at a time (the point: a clip too long for one GPU fits P of them), while
its compute per step, the global batch and the data it reads stay those of the same world size without SP;
every clip is still trained on once. The ranks of a group keep one RNG stream (seeded by the data-parallel
rank), so they draw the same noise and timesteps.

The model files hold no distributed code: the DiT calls the ``attend`` and ``sequence`` objects handed to
it here (``VideoModel.shard_sequence``). Sampling during training runs on every rank of a group with the
gathered batch's conditioning, so it is sequence-parallel too. On one process::

    python -c "from vidgen_ray.train.sequence_parallel import Mesh; print(Mesh.build(1, 'cpu'))"
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from vidgen_ray.models.base import Batch


def _all_to_all(x: torch.Tensor, group, scatter_dim: int, gather_dim: int) -> torch.Tensor:
    """Rank r sends chunk i of ``x`` along ``scatter_dim`` to rank i and concatenates what it receives
    along ``gather_dim`` (``all_to_all_single``, which gloo runs too)."""
    p = dist.get_world_size(group)
    chunks = torch.stack(x.chunk(p, dim=scatter_dim)).contiguous()  # [P, ...]: chunk i goes to rank i
    received = torch.empty_like(chunks)
    dist.all_to_all_single(received, chunks, group=group)
    return torch.cat(received.unbind(0), dim=gather_dim)


class _AllToAll(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, group, scatter_dim: int, gather_dim: int):
        ctx.group, ctx.dims = group, (scatter_dim, gather_dim)
        return _all_to_all(x, group, scatter_dim, gather_dim)

    @staticmethod
    def backward(ctx, grad):
        scatter_dim, gather_dim = ctx.dims
        return _all_to_all(grad, ctx.group, gather_dim, scatter_dim), None, None, None


class _Gather(torch.autograd.Function):
    """All-gather along ``dim``; backward keeps this rank's chunk of the gradient. Every rank of the group
    computes the same loss from the gathered whole, so the chunk is the exact gradient of its input."""

    @staticmethod
    def forward(ctx, x, group, dim: int):
        ctx.group, ctx.dim = group, dim
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, x.contiguous(), group=group)
        return torch.cat(parts, dim=dim)

    @staticmethod
    def backward(ctx, grad):
        p, r = dist.get_world_size(ctx.group), dist.get_rank(ctx.group)
        return grad.chunk(p, dim=ctx.dim)[r].contiguous(), None, None


class _Shareable:
    """Held by model modules: deep copies (an EMA or untrained copy of the model) share it."""

    def __deepcopy__(self, memo):
        return self


class TokenShards(_Shareable):
    """Splits a token tensor along ``dim`` into this rank's 1/P (a slice: its gradient flows back as a
    slice) and all-gathers the model's per-token output."""

    def __init__(self, group, dim: int = 2) -> None:
        self.group, self.dim = group, dim
        self.size, self.rank = dist.get_world_size(group), dist.get_rank(group)

    def shard(self, tokens: torch.Tensor) -> torch.Tensor:
        n = tokens.shape[self.dim]
        if n % self.size:
            raise ValueError(f"{n} tokens along the sharded axis are not divisible by parallel.sequence_parallel="
                             f"{self.size}; pick a size whose spatial token count is a multiple of it")
        return tokens.chunk(self.size, dim=self.dim)[self.rank]

    def gather(self, tokens: torch.Tensor) -> torch.Tensor:
        return _Gather.apply(tokens, self.group, self.dim)


class UlyssesAttention(_Shareable):
    """``scaled_dot_product_attention`` over a sequence sharded by ``tokens``: q, k, v [N, H, L/P, d]
    -> all-to-all to [N, H/P, L, d] -> attention -> all-to-all back to [N, H, L/P, d]."""

    def __init__(self, tokens: TokenShards) -> None:
        self.tokens = tokens

    def __call__(self, q, k, v, attn_mask=None, dropout_p: float = 0.0):
        if attn_mask is not None:
            raise ValueError("sequence-parallel attention takes no mask (the DiT's spatial attention has none)")
        group = self.tokens.group
        q, k, v = (_AllToAll.apply(x, group, 1, 2) for x in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
        return _AllToAll.apply(out, group, 2, 1)


@dataclass
class Mesh:
    """The (dp, sp) layout of the worker group: consecutive ranks form an SP group (on one node where the
    group fits: its all-to-alls are the chattiest traffic), ranks sp apart a data-parallel one."""

    sp: int = 1
    dp: int = 1
    device_mesh: Any = None  # torch DeviceMesh ("dp", "sp"); None on one process
    tokens: TokenShards | None = None  # where sp > 1

    @classmethod
    def build(cls, sp: int, device_type: str) -> "Mesh":
        world = dist.get_world_size() if dist.is_initialized() else 1
        if sp < 1 or world % sp:
            raise ValueError(f"{world} workers cannot form sequence-parallel groups of {sp}; "
                             f"set parallel.num_workers to a multiple of parallel.sequence_parallel={sp}")
        if world == 1:
            return cls()
        if sp == 1:  # plain data parallelism over the default group, as without a mesh
            return cls(1, world)
        from torch.distributed.device_mesh import init_device_mesh

        mesh = init_device_mesh(device_type, (world // sp, sp), mesh_dim_names=("dp", "sp"))
        return cls(sp, world // sp, mesh, TokenShards(mesh.get_group("sp")) if sp > 1 else None)

    @property
    def dp_group(self):
        return self.device_mesh.get_group("dp") if self.device_mesh is not None else None

    @property
    def dp_mesh(self):
        return self.device_mesh["dp"] if self.device_mesh is not None else None

    @property
    def sp_group(self):
        return self.tokens.group if self.tokens is not None else None

    @property
    def dp_rank(self) -> int:
        """The rank among data-parallel replicas: the ranks of an SP group share it (and their RNG seed)."""
        if self.device_mesh is not None:
            return self.device_mesh.get_local_rank("dp")
        return dist.get_rank() if dist.is_initialized() else 0

    def apply(self, model) -> None:
        """Hand the model its token split and attention (before wrapping: checkpoint wrappers hide blocks)."""
        if self.tokens is not None:
            model.shard_sequence(UlyssesAttention(self.tokens), self.tokens)

    def __repr__(self) -> str:
        return f"Mesh(dp={self.dp}, sp={self.sp})"


def sum_gradients(parameters, group) -> None:
    """Sum every gradient over the SP group, one flat all-reduce per dtype. FSDP2's gradients are DTensor
    shards over "dp"; the ranks of an SP group hold the same shard, so their local tensors are summed."""
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for p in parameters:
        if p.grad is not None:
            g = p.grad.to_local() if hasattr(p.grad, "to_local") else p.grad
            by_dtype.setdefault(g.dtype, []).append(g)
    for grads in by_dtype.values():
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, group=group)
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()


def group_micro_batches(batch: Batch, group) -> list[Batch]:
    """The micro-batches the ranks of an SP group read, in rank order, on every rank of the group: the group
    trains on each of them in turn, together (``train_step`` accumulates over them)."""
    p = dist.get_world_size(group)

    def gather(x: torch.Tensor) -> list[torch.Tensor]:
        parts = [torch.empty_like(x) for _ in range(p)]
        dist.all_gather(parts, x.contiguous(), group=group)
        return parts

    videos = gather(batch.video)
    labels = gather(batch.label) if batch.label is not None else [None] * p
    captions: list = [None] * p
    if batch.caption is not None:
        dist.all_gather_object(captions, list(batch.caption), group=group)
    return [Batch(video=v, label=y, caption=c) for v, y, c in zip(videos, labels, captions)]
