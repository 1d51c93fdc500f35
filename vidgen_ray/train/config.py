"""Typed configuration of training (the loop) and of parallelism (the ``parallelize`` seam)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class OptimConfig:
    name: Literal["adamw", "adam", "sgd", "rmsprop"] = "adamw"
    lr: float = 3e-4
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    momentum: float = 0.9  # sgd / rmsprop
    eps: float = 1e-8
    # Per-part learning-rate multipliers, e.g. a GAN's discriminator at 4x the generator (TTUR).
    discriminator_lr_mult: float = 1.0

    def validate(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"train.optim.lr must be positive, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError("train.optim.weight_decay must be >= 0")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError("train.optim.beta1/beta2 must be in [0, 1)")


@dataclass
class ScheduleConfig:
    kind: Literal["cosine", "constant"] = "cosine"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio

    def validate(self) -> None:
        if self.warmup_steps < 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError("train.schedule: warmup_steps >= 0 and 0 <= min_lr_ratio <= 1")


@dataclass
class TrainConfig:
    batch_size: int = 8  # per worker, per micro-step
    grad_accum: int = 1
    epochs: int = 1
    max_steps: int = 0  # optimizer steps; 0 = run `epochs` passes over the train split
    grad_clip: float = 1.0  # max global grad norm; 0 = off
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    ema_decay: float = 0.0  # 0 = no EMA; e.g. 0.999
    log_every: int = 10
    val_every: int = 0  # steps; 0 = only at the end
    val_batches: int = 8  # per worker
    sample_every: int = 0  # steps; 0 = only at the end
    num_samples: int = 4
    checkpoint_every: int = 100  # steps; a checkpoint is also written at the end
    keep_last: int = 2
    keep_best: str | None = None  # e.g. "val_loss": keep the best checkpoints by this metric instead of the newest
    keep_best_mode: Literal["min", "max"] = "min"
    early_stop_metric: str | None = None  # e.g. "val_loss"
    early_stop_mode: Literal["min", "max"] = "min"
    early_stop_patience: int = 3  # validations without improvement
    early_stop_min_delta: float = 0.0  # an improvement smaller than this does not count
    async_checkpoint_upload: bool = True  # upload on a thread while training goes on
    seed: int = 0
    # Fine-tuning: a checkpoint (path or URI) whose weights (its EMA where it has one) start this run when it
    # is not resuming; this config may add modules (a control branch, an image condition), see
    # checkpoints.initialise_from. Optimizer state and step start fresh.
    init_from: str | None = None
    # Experiment trackers rank 0 logs to (vidgen_ray/tracking): tensorboard, wandb, mlflow; () = none.
    trackers: tuple[str, ...] = ("tensorboard",)
    tracker_project: str = "vidgen-ray"  # the W&B project, the MLflow experiment
    tracker_group: str | None = None  # runs that belong together (a sweep sets its name)

    def validate(self) -> None:
        if self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("train.batch_size and train.grad_accum must be >= 1")
        if self.max_steps < 0 or self.epochs < 1:
            raise ValueError("train.max_steps must be >= 0 and train.epochs >= 1")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"train.ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.log_every < 1 or self.checkpoint_every < 1 or self.keep_last < 1:
            raise ValueError("train.log_every, train.checkpoint_every and train.keep_last must be >= 1")
        if self.early_stop_patience < 1:
            raise ValueError("train.early_stop_patience must be >= 1")
        from vidgen_ray.tracking import check_names

        check_names(self.trackers)


@dataclass
class ParallelConfig:
    strategy: Literal["none", "ddp", "fsdp2", "deepspeed"] = "ddp"
    # Training workers; with min_workers > 0 the run is elastic (Ray Train's ScalingConfig(num_workers=
    # (min, max))): it starts with what the cluster holds between the two, goes on with fewer when a
    # node dies and grows back when nodes return. ``parallel.num_workers=2-4`` (or [2, 4]) sets both.
    num_workers: int = 2
    min_workers: int = 0  # 0: a fixed-size group of num_workers
    elastic_resize_interval_s: float = 60.0  # how often an elastic run checks whether it can grow
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    worker_resource: str | None = None  # a custom node resource workers must sit on, e.g. "train"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    activation_checkpointing: bool = False
    compile: bool = False
    fsdp_cpu_offload: bool = False
    zero_stage: int = 2
    offload_optimizer: bool = False  # DeepSpeed ZeRO: optimizer state on CPU
    offload_params: bool = False  # DeepSpeed ZeRO-3: parameters on CPU
    max_failures: int = 3  # worker-group restarts before the run fails
    # How long the preflight waits for an autoscaler to add the nodes a run needs (vidgen_ray/preflight.py);
    # a cluster without one fails at once.
    resource_wait_s: float = 900.0
    backend: Literal["auto", "gloo", "nccl"] = "auto"
    # Ulysses sequence parallelism (train/sequence_parallel.py): groups of this many consecutive workers
    # split every clip's tokens between them (the DiT only); DDP / FSDP2 run over the num_workers /
    # sequence_parallel groups.
    sequence_parallel: int = 1

    @staticmethod
    def parse_num_workers(value) -> dict:
        """``num_workers`` as given: 4, "2-4" or [2, 4] (elastic between the two)."""
        if isinstance(value, str) and "-" in value.strip().lstrip("-"):
            value = value.split("-", 1)
        if isinstance(value, (list, tuple)):
            if len(value) != 2:
                raise ValueError(f"parallel.num_workers: expected N, MIN-MAX or [MIN, MAX], got {value!r}")
            return {"min_workers": value[0], "num_workers": value[1]}
        return {"min_workers": 0, "num_workers": value}  # one number: a fixed group, whatever was set before

    @property
    def elastic(self) -> bool:
        return 0 < self.min_workers < self.num_workers

    @property
    def fewest_workers(self) -> int:
        """The smallest group the run trains with (what must fit before it starts)."""
        return self.min_workers if self.elastic else self.num_workers

    def validate(self) -> None:
        if self.num_workers < 1:
            raise ValueError("parallel.num_workers must be >= 1")
        if not 0 <= self.min_workers <= self.num_workers:
            raise ValueError(f"parallel.min_workers {self.min_workers} must be in [0, num_workers={self.num_workers}] "
                             "(0: a fixed-size group); e.g. parallel.num_workers=2-4")
        if self.elastic and self.strategy == "deepspeed":
            raise ValueError("an elastic run (parallel.num_workers=MIN-MAX) shares each step's micro-batches out anew at "
                             "every world size, and DeepSpeed's engine fixes its accumulation steps when it starts; use "
                             "parallel.strategy=fsdp2 or ddp, or a fixed num_workers")
        if self.elastic_resize_interval_s < 0:
            raise ValueError("parallel.elastic_resize_interval_s must be >= 0 (seconds)")
        if self.zero_stage not in (1, 2, 3):
            raise ValueError(f"parallel.zero_stage must be 1, 2 or 3, got {self.zero_stage}")
        if self.offload_params and not (self.strategy == "deepspeed" and self.zero_stage == 3):
            raise ValueError("parallel.offload_params needs parallel.strategy=deepspeed and parallel.zero_stage=3")
        if self.offload_optimizer and self.strategy != "deepspeed":
            raise ValueError("parallel.offload_optimizer is a DeepSpeed ZeRO option; use parallel.fsdp_cpu_offload with fsdp2")
        if self.fsdp_cpu_offload and self.strategy != "fsdp2":
            raise ValueError("parallel.fsdp_cpu_offload needs parallel.strategy=fsdp2")
        if self.strategy == "fsdp2" and self.precision == "fp16":
            raise ValueError("fsdp2 with fp16 needs a sharded grad scaler; use parallel.precision=bf16")
        if self.resource_wait_s < 0:
            raise ValueError("parallel.resource_wait_s must be >= 0 (seconds to wait for the autoscaler)")
        if self.sequence_parallel < 1 or self.num_workers % self.sequence_parallel:
            raise ValueError(f"parallel.sequence_parallel={self.sequence_parallel} must be >= 1 and divide "
                             f"parallel.num_workers={self.num_workers}; set one to fit the other")
        if self.sequence_parallel > 1 and self.elastic:
            raise ValueError("sequence parallelism needs a fixed group (its groups of parallel.sequence_parallel ranks "
                             "are laid out when the run starts); set a fixed parallel.num_workers")
        if self.sequence_parallel > 1 and self.fsdp_cpu_offload:
            raise ValueError("parallel.sequence_parallel > 1 sums gradients over its group on the device; with "
                             "parallel.fsdp_cpu_offload they live on the CPU: use one or the other")
        if self.sequence_parallel > 1 and self.strategy == "deepspeed":
            raise ValueError("parallel.sequence_parallel > 1 runs with parallel.strategy=none, ddp or fsdp2 "
                             "(DeepSpeed's engine reduces gradients itself, over every rank)")
        if self.max_failures < 0:
            raise ValueError("parallel.max_failures must be >= 0 (a finite number of restarts)")
