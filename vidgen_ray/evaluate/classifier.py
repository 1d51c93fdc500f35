"""Class accuracy of generated videos: a small motion classifier trained on real clips labels
what a class-conditional generator (or a predictor continuing real context) produced.

    vidgen-ray classifier --data ./outputs/demo/clips --out ./outputs/classifier      # train, report held-out accuracy
    vidgen-ray eval --checkpoint RUN/checkpoint_000000600 --set classifier=./outputs/classifier

Why: FVD barely sees wrong motion and is biased upwards at small N ("Content bias in FVD",
arXiv 2404.12391), so a generator is also judged the way Ravuri & Vinyals (2019, Classification
Accuracy Score) judge one: does a classifier of *real* clips recognise the class it was asked for?
``real_accuracy`` (the classifier on real held-out clips) is the ceiling to read it against.

The network is a few strided 3D convolutions with global pooling (motion is in its receptive field:
its first block convolves 3 frames). It takes uint8 clips [N, T, H, W, C] as the data pipeline and
``to_uint8`` produce them; clips of another size are resized to the size it was trained at.
The saved file (``classifier.pt`` under the URI) holds the weights, the config and the accuracy
it reached, so ``load_classifier`` needs nothing else.
"""

from __future__ import annotations

import io
import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vidgen_ray import storage
from vidgen_ray.runtime import get_logger

log = get_logger("evaluate.classifier")

FILE = "classifier.pt"
# Bumped when training changes what the same config learns (2: clipping, the best epoch kept): caches
# keyed by config (the learning benchmark's) include it.
TRAINING_VERSION = 2


@dataclass
class ClassifierConfig:
    frames: int = 16
    height: int = 32
    width: int = 32
    num_classes: int = 4
    channels: tuple[int, ...] = (32, 64, 128)  # one strided block each (space /2; time /2 after the first)
    epochs: int = 10
    min_steps: int = 600  # more epochs on a small set: a few hundred clips still get enough updates
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    label_names: tuple[str, ...] = ()

    def validate(self) -> None:
        if self.num_classes < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got {self.num_classes}; label the clips")
        if min(self.frames, self.height, self.width) < 2 or not self.channels:
            raise ValueError("classifier frames/height/width must be >= 2 and channels non-empty")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("classifier epochs and batch_size must be >= 1 and lr > 0")


# A lighter classifier (a quarter of the default's convolution work, ~1 min here instead of ~3) for
# the demo and the learning benchmark's --quick runs; it still reaches real_accuracy 1.000 on the motion set.
LIGHT: dict = {"channels": (16, 32, 64), "min_steps": 300}


class MotionClassifier(nn.Module):
    """uint8 [N, T, H, W, C] (or float in [-1, 1], channels first) -> logits [N, num_classes]."""

    def __init__(self, cfg: ClassifierConfig) -> None:
        super().__init__()
        self.config = cfg
        layers: list[nn.Module] = []
        in_ch = 3
        for i, ch in enumerate(cfg.channels):
            stride = (1 if i == 0 else 2, 2, 2)
            layers += [nn.Conv3d(in_ch, ch, 3, stride=stride, padding=1), nn.GroupNorm(8, ch), nn.SiLU(),
                       nn.Conv3d(ch, ch, 3, padding=1), nn.GroupNorm(8, ch), nn.SiLU()]
            in_ch = ch
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(in_ch, cfg.num_classes)

    def prepare(self, videos: torch.Tensor) -> torch.Tensor:
        """uint8 [N, T, H, W, C] -> float [N, C, T, H, W] in [-1, 1] at the trained size."""
        cfg = self.config
        if videos.ndim != 5 or videos.shape[-1] != 3:
            raise ValueError(f"the classifier wants uint8 videos [N, T, H, W, 3], got {tuple(videos.shape)}")
        if videos.shape[1] < cfg.frames:
            raise ValueError(f"the classifier was trained on {cfg.frames}-frame clips; got {videos.shape[1]} frames")
        x = videos[:, : cfg.frames].permute(0, 4, 1, 2, 3).float().div(127.5).sub(1.0)
        if tuple(x.shape[3:]) != (cfg.height, cfg.width):
            x = F.interpolate(x, size=(cfg.frames, cfg.height, cfg.width), mode="trilinear", align_corners=False)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = self.prepare(x)
        return self.head(self.body(x).mean(dim=(2, 3, 4)))


@dataclass
class TrainedClassifier:
    model: MotionClassifier
    train_accuracy: float = math.nan
    heldout_accuracy: float = math.nan  # on real held-out clips: the ceiling for class_accuracy
    seconds: float = 0.0
    history: list[dict] = field(default_factory=list)


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Horizontal flips (the data pipeline's own train augmentation): a flipped class stays the class."""
    flip = torch.rand(x.shape[0], generator=gen) < 0.5
    return torch.where(flip[:, None, None, None, None], x.flip(-1), x)


def train_classifier(videos: np.ndarray, labels: np.ndarray, cfg: ClassifierConfig,
                     heldout: tuple[np.ndarray, np.ndarray] | None = None) -> TrainedClassifier:
    """Fit on uint8 clips [N, T, H, W, C] with int labels [N]; report accuracy on ``heldout``."""
    cfg.validate()
    labels = np.asarray(labels, dtype=np.int64)
    if labels.min() < 0 or labels.max() >= cfg.num_classes:
        raise ValueError(f"labels must be in [0, {cfg.num_classes}); got {labels.min()}..{labels.max()} "
                         "(unlabelled clips carry -1: train the classifier on labelled data only)")
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model = MotionClassifier(cfg)
    x_all = model.prepare(torch.from_numpy(np.ascontiguousarray(videos)))  # small clips: all fit in memory
    y_all = torch.from_numpy(labels)
    steps_per_epoch = max(1, math.ceil(len(x_all) / cfg.batch_size))
    epochs = max(cfg.epochs, math.ceil(cfg.min_steps / steps_per_epoch))
    total = epochs * steps_per_epoch
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, pct_start=0.15)
    started = time.perf_counter()
    out = TrainedClassifier(model)
    # The weights of the epoch with the best training accuracy, kept for a collapse: near zero loss at
    # the peak rate, one run fell to chance (0.99 -> 0.25 in an epoch; the learning benchmark's 568
    # clips, 2026-12-03) and ended at 0.73. Clipping makes that rarer; the kept epoch makes it harmless.
    best = (-1.0, None)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(x_all), generator=gen)
        correct = seen = 0
        for s in range(steps_per_epoch):
            idx = order[s * cfg.batch_size : (s + 1) * cfg.batch_size]
            logits = model(_augment(x_all[idx], gen))
            loss = F.cross_entropy(logits, y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            correct += int((logits.argmax(1) == y_all[idx]).sum())
            seen += len(idx)
        out.history.append({"epoch": epoch + 1, "loss": loss.item(), "train_accuracy": correct / seen})
        if correct / seen >= best[0]:  # ties go to the later epoch (a lower learning rate)
            best = (correct / seen, {k: v.detach().clone() for k, v in model.state_dict().items()})
    if best[1] is not None and out.history[-1]["train_accuracy"] < best[0] - 0.05:  # collapsed, not noise
        log.warning("classifier: the last epoch's training accuracy %.3f is below the best epoch's %.3f: keeping the best",
                    out.history[-1]["train_accuracy"], best[0])
        model.load_state_dict(best[1])
    model.eval()
    out.train_accuracy = accuracy(model, videos, labels)
    if heldout is not None and len(heldout[0]):
        out.heldout_accuracy = accuracy(model, *heldout)
    out.seconds = time.perf_counter() - started
    log.info("classifier: %d clips, %d epochs in %.1f s; train accuracy %.4f, held-out %.4f", len(x_all), epochs,
             out.seconds, out.train_accuracy, out.heldout_accuracy)
    return out


@torch.inference_mode()
def predict(model: MotionClassifier, videos: np.ndarray | torch.Tensor, batch_size: int = 64) -> np.ndarray:
    """uint8 videos [N, T, H, W, C] -> predicted class ids [N]."""
    was_training = model.training
    model.eval()
    videos = torch.as_tensor(np.ascontiguousarray(videos)) if isinstance(videos, np.ndarray) else videos
    out = [model(videos[s : s + batch_size]).argmax(1) for s in range(0, len(videos), batch_size)]
    model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.int64)


def accuracy(model: MotionClassifier, videos: np.ndarray, labels: np.ndarray) -> float:
    """Share of ``videos`` the classifier puts in the class ``labels`` says."""
    if len(videos) == 0:
        raise ValueError("no videos to classify")
    return float((predict(model, videos) == np.asarray(labels)).mean())


def save_classifier(trained: TrainedClassifier, uri: str) -> str:
    """Write ``classifier.pt`` (weights, config, accuracies) under ``uri``; returns the file's URI."""
    buf = io.BytesIO()
    torch.save({"config": asdict(trained.model.config), "state_dict": trained.model.state_dict(),
                "train_accuracy": trained.train_accuracy, "heldout_accuracy": trained.heldout_accuracy,
                "seconds": trained.seconds, "history": trained.history}, buf)
    storage.makedirs(uri)
    path = storage.join(uri, FILE)
    storage.write_bytes(path, buf.getvalue())
    return path


def load_classifier(uri: str) -> TrainedClassifier:
    """A classifier saved by ``save_classifier`` (the folder or the ``classifier.pt`` file itself)."""
    path = uri if uri.endswith(".pt") else storage.join(uri, FILE)
    if not storage.exists(path):
        raise FileNotFoundError(f"no classifier at {path}: train one with `vidgen-ray classifier --data CLIPS --out {uri}`")
    blob = torch.load(io.BytesIO(storage.read_bytes(path)), map_location="cpu", weights_only=False)
    raw = dict(blob["config"])
    raw["channels"], raw["label_names"] = tuple(raw["channels"]), tuple(raw["label_names"])
    model = MotionClassifier(ClassifierConfig(**raw))
    model.load_state_dict(blob["state_dict"])
    model.eval()
    return TrainedClassifier(model, blob.get("train_accuracy", math.nan), blob.get("heldout_accuracy", math.nan),
                             seconds=blob.get("seconds", 0.0), history=blob.get("history", []))
