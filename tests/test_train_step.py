"""One optimizer step in one process (no Ray, no process group): metrics stay device tensors until the
loop logs them, and an elastic group's padding passes count for nothing."""

from __future__ import annotations

from dataclasses import replace

import torch

from vidgen_ray.models.base import Batch
from vidgen_ray.models.registry import build_model, get_preset
from vidgen_ray.train.config import OptimConfig, ParallelConfig, TrainConfig
from vidgen_ray.train.loop import host_metrics, train_step
from vidgen_ray.train.parallelize import parallelize


def _setup(preset: str, train: TrainConfig | None = None, **fields):
    torch.manual_seed(0)
    model = build_model(replace(get_preset(preset), **fields))
    train = train or TrainConfig(batch_size=2)
    parts = parallelize(model, ParallelConfig(strategy="ddp", num_workers=1), train, torch.device("cpu"), 10)
    return model, parts


def test_metrics_stay_tensors_until_read_all_at_once():
    model, parts = _setup("gan-debug")
    video = torch.rand(2, 3, 8, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    metrics = train_step(model, parts, [Batch(video, torch.tensor([0, 1]))], 0, 1)
    for key in ("loss", "loss_generator", "loss_discriminator", "grad_norm_generator", "d_real", "g_loss"):
        assert torch.is_tensor(metrics[key]) and metrics[key].ndim == 0, key
    host = host_metrics(metrics)
    assert all(type(v) is float for v in host.values())
    assert host["loss"] == float(metrics["loss_generator"] + metrics["loss_discriminator"])


def test_padding_passes_of_an_uneven_share_change_nothing():
    video = torch.rand(2, 3, 8, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    weights = []
    for passes in (1, 3):  # this rank's 1 micro-batch, padded to the 3 passes another rank runs
        # SGD without clipping: a padding pass that counted would show (Adam and clipping undo a scale).
        sgd = TrainConfig(batch_size=2, grad_clip=0.0, optim=OptimConfig(name="sgd", lr=0.5, momentum=0.0))
        model, parts = _setup("rnn-debug", sgd, teacher_forcing_floor=1.0)  # a loss that draws no random numbers
        metrics = host_metrics(train_step(model, parts, [Batch(video)], 0, 1, passes=passes))
        weights.append((metrics["loss"], {k: v.clone() for k, v in parts["model"].raw.state_dict().items()}))
    (loss_1, w_1), (loss_3, w_3) = weights
    assert loss_1 == loss_3  # padding passes are not averaged into the metrics
    for k in w_1:
        torch.testing.assert_close(w_3[k], w_1[k], rtol=0, atol=0, msg=k)
