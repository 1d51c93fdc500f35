"""Validation on the val split: every part's loss, plus PSNR / SSIM where the family reconstructs
(VAE) or predicts (recurrent predictor) frames. Runs on every rank over equal shards; the caller
averages across ranks."""

from __future__ import annotations

import itertools

import torch

from vidgen_ray.data.pipeline import torch_batches
from vidgen_ray.evaluate.pixel import psnr, ssim
from vidgen_ray.train.batches import to_batch
from vidgen_ray.train.sequence_parallel import group_micro_batches
from vidgen_ray.train.strategies import autocast


def _agreed(stream, limit: int, device) -> list:
    """Up to ``limit`` batches, as many on every rank: one-shape (bucketed) batches come out in numbers that
    differ between ranks' shards, and every rank must run the same forwards (FSDP gathers in each)."""
    batches = list(itertools.islice(stream, limit))
    if torch.distributed.is_initialized():
        n = torch.tensor([len(batches)], device=device)
        torch.distributed.all_reduce(n, op=torch.distributed.ReduceOp.MIN)
        batches = batches[: int(n.item())]
    return batches


def validate(model, parts, val_shard, cfg, normalizer, device, step: int) -> dict[str, float]:
    sums: dict[str, float] = {}
    batches = 0
    model.eval()
    # The losses draw noise (latents, timesteps, reparameterisation): the same draws at every
    # validation make val metrics comparable across steps, so early stopping sees the model change,
    # not the dice. The training RNG stream is left untouched.
    devices = [device] if torch.device(device).type == "cuda" else []
    with torch.no_grad(), torch.random.fork_rng(devices=devices):
        mesh = next(iter(parts.values())).strategy.mesh  # a sequence-parallel group validates one batch together
        torch.manual_seed(cfg.train.seed + 1_000_003 * (1 + mesh.dp_rank))
        stream = torch_batches(val_shard, cfg.train.batch_size, cfg.data, shuffle=False)
        if cfg.data.bucket_shapes:
            stream = _agreed(stream, cfg.train.val_batches, device)
        reads = 0
        for raw in stream:
            if reads >= cfg.train.val_batches:
                break
            reads += 1
            batch = to_batch(raw, normalizer, device, cfg.model.num_classes)
            # A sequence-parallel group validates its ranks' batches in turn, together.
            for batch in [batch] if mesh.sp_group is None else group_micro_batches(batch, mesh.sp_group):
                with autocast(device, cfg.parallel.precision):
                    for name in parts:
                        out = model.losses(name, batch, step)
                        sums[f"val_loss_{name}"] = sums.get(f"val_loss_{name}", 0.0) + float(out.loss)
                    pair = model.reconstruct(batch)
                if pair is not None:
                    target, pred = pair
                    real = normalizer.inverse(target.float()).cpu().numpy()
                    fake = normalizer.inverse(pred.float()).cpu().numpy()
                    sums["val_psnr"] = sums.get("val_psnr", 0.0) + sum(psnr(r, f) for r, f in zip(real, fake)) / len(real)
                    sums["val_ssim"] = sums.get("val_ssim", 0.0) + sum(ssim(r, f) for r, f in zip(real, fake)) / len(real)
                batches += 1
    model.train()
    if not batches:
        return {}
    out = {k: v / batches for k, v in sums.items()}
    out["val_loss"] = sum(v for k, v in out.items() if k.startswith("val_loss_"))
    return out
