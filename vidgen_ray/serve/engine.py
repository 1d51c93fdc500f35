"""The model side of serving, without Ray: load a checkpoint, check requests against it, run a batch
of them, encode the videos. The Serve deployment wraps this; the benchmark calls it in-process to
time the bare model on the same code path.

    python -c "from vidgen_ray.serve.engine import Engine; from vidgen_ray.serve.config import ServeConfig; \
from vidgen_ray.serve.schema import GenerateRequest as R; e = Engine(ServeConfig(checkpoint='CKPT')); \
print(e.card); print(len(e.run([e.validate(R(seed=0, format='npy'))])[0].body))"

Determinism (``sampling="per_request"``, the default): a request's video is
``model.sample(1, seed, labels=[class] or None, captions=[caption], steps=, guidance=)[0]``, cut to
``frames``, whatever else is in its batch. ``sampling="fused"`` runs one ``model.sample`` per group of
equal (steps, guidance) with the group's first seed; a video then depends on its batch, which the
response headers describe: ``model.sample(x-vidgen-fused-size, x-vidgen-fused-seed, ...)`` row
``x-vidgen-fused-row`` (with the conditioning of the requests batched with it).
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import secrets
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from vidgen_ray.media import encode_mp4
from vidgen_ray.models.base import count_parameters, to_uint8
from vidgen_ray.models.conditioning import read_image
from vidgen_ray.runtime import get_logger
from vidgen_ray.serve.config import ServeConfig
from vidgen_ray.serve.schema import MEDIA_TYPES, GenerateRequest, RequestError

log = get_logger("serve")


@dataclass(frozen=True)
class ModelCard:
    """What clients may ask of the loaded model (``GET /metadata``), read from its checkpoint."""

    checkpoint: str
    name: str
    family: str
    frames: int
    height: int
    width: int
    channels: int
    fps: float
    num_classes: int  # 0 = no class conditioning
    caption: bool
    max_caption_bytes: int  # longest caption the text encoder reads whole (0 without captions)
    default_steps: int | None  # None: the family has no sampling steps
    default_guidance: float | None  # None: the family has no guidance
    needs_context: bool  # a predictor: it continues given frames instead of generating from noise
    image: bool  # takes 'image' (a first frame)
    sketch: bool  # takes 'sketch' (a picture whose edges steer the video)
    default_image_guidance: float | None  # None: no guidance on the image
    shapes: list  # [frames, height, width] it was trained at and samples at: its buckets, else its own shape
    step: int  # training step of the checkpoint
    device: str
    parameters: int

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Job:
    """A validated request with every default filled in."""

    seed: int
    label: int | None
    caption: str | None
    frames: int
    steps: int | None
    guidance: float | None
    format: str
    shape: tuple[int, int, int] = (0, 0, 0)  # (frames, height, width) sampled; the first ``frames`` are kept
    image: torch.Tensor | None = field(default=None, compare=False)  # float [C, H, W] in [-1, 1], at ``shape``
    sketch: torch.Tensor | None = field(default=None, compare=False)
    image_guidance: float | None = None

    @property
    def options(self) -> tuple:
        """Requests with equal options can share one ``model.sample`` call (with or without a picture alike)."""
        return (self.steps, self.guidance, self.shape, self.image is not None, self.sketch is not None, self.image_guidance)


@dataclass
class Output:
    """One request's answer: the encoded video, or ``error`` (the request failed, the replica did not)."""

    body: bytes = b""
    media_type: str = ""
    headers: dict[str, str] | None = None
    error: str | None = None


def _trained_shapes(experiment) -> list[list[int]]:
    """What a checkpoint samples at: its data.buckets (the model's own shape first), or the model's shape."""
    m = experiment.model
    own = [m.frames, m.height, m.width]
    buckets = [[b.frames, b.height, b.width] for b in experiment.data.bucket_shapes]
    return [own] + [b for b in buckets if b != own]


def pick_device(config: ServeConfig) -> torch.device:
    if config.device == "auto":
        return torch.device("cuda" if config.num_gpus > 0 and torch.cuda.is_available() else "cpu")
    return torch.device(config.device)


def cpu_threads(config: ServeConfig) -> int:
    """Torch threads for one replica: its CPU share (Ray does not pin threads, torch would take all cores)."""
    return max(1, math.floor(config.num_cpus))


def _load(config: ServeConfig, device: torch.device):
    if config.loader is not None:
        return config.loader(config.checkpoint, config.use_ema, device)
    from vidgen_ray.checkpoints import load_for_inference

    return load_for_inference(config.checkpoint, use_ema=config.use_ema, device=device)


class Engine:
    def __init__(self, config: ServeConfig) -> None:
        self.config = config.validate()
        self.device = pick_device(config)
        self.model, experiment, meta = _load(config, self.device)
        m = experiment.model
        conditioning = self.model.conditioning()
        self.card = ModelCard(
            checkpoint=config.checkpoint,
            name=m.name,
            family=m.family,
            frames=m.frames,
            height=m.height,
            width=m.width,
            channels=m.channels,
            fps=float(experiment.data.clip.fps),
            num_classes=conditioning.classes,
            caption=conditioning.captions,
            max_caption_bytes=conditioning.max_caption_bytes,
            default_steps=conditioning.default_steps,
            default_guidance=conditioning.default_guidance,
            needs_context=conditioning.context_frames > 0,
            image=conditioning.image,
            sketch=conditioning.sketch,
            default_image_guidance=conditioning.default_image_guidance,
            shapes=_trained_shapes(experiment),
            step=int(meta.get("state", {}).get("step", 0)),
            device=str(self.device),
            parameters=sum(count_parameters(p) for p in self.model.parts().values()),
        )
        log.info("loaded %s (%s, %d parameters, step %d) from %s on %s", m.name, m.family,
                 self.card.parameters, self.card.step, config.checkpoint, self.device)

    # --- requests ---------------------------------------------------------------------------------
    def validate(self, request: GenerateRequest) -> Job:
        """Request -> Job, or RequestError(422) naming the field, the limit and the fix."""
        card, limits = self.card, self.config.limits
        if card.needs_context:
            raise RequestError(
                422,
                f"{card.name} is a {card.family} predictor: it continues context frames instead of generating "
                "from noise, and this server does not take uploaded frames; serve a generator (gan, vae, dit) or "
                "run the predictor offline with model.sample(n, seed, context=frames)",
            )
        if request.label is not None:
            if card.num_classes == 0:
                raise RequestError(422, f"{card.name} is not class-conditional; drop 'class'")
            if not 0 <= request.label < card.num_classes:
                raise RequestError(422, f"'class' {request.label} is out of range: {card.name} has classes "
                                        f"0..{card.num_classes - 1}")
        if request.caption is not None:
            if not card.caption:
                raise RequestError(422, f"{card.name} takes no captions; drop 'caption'")
            if len(request.caption) > limits.max_caption_chars:
                raise RequestError(422, f"'caption' has {len(request.caption)} characters; the limit is "
                                        f"{limits.max_caption_chars}")
            size = len(request.caption.encode("utf-8"))
            if size > card.max_caption_bytes:
                raise RequestError(422, f"'caption' is {size} UTF-8 bytes; {card.name} reads at most "
                                        f"{card.max_caption_bytes}: shorten it")
        seed = request.seed
        if seed is None:
            seed = secrets.randbelow(limits.max_seed + 1)
        elif not 0 <= seed <= limits.max_seed:
            raise RequestError(422, f"'seed' {seed} must be in 0..{limits.max_seed}")
        shape, frames = self._shape(request)
        steps = self._option("steps", request.steps, card.default_steps)
        if steps is not None and not 1 <= steps <= limits.max_steps:
            raise RequestError(422, f"'steps' {steps} must be in 1..{limits.max_steps}")
        guidance = self._option("guidance", request.guidance, card.default_guidance)
        if guidance is not None and not (math.isfinite(guidance) and 0.0 <= guidance <= limits.max_guidance):
            raise RequestError(422, f"'guidance' {guidance} must be in 0..{limits.max_guidance} (1 = no guidance)")
        if request.format == "mp4" and card.channels != 3:
            raise RequestError(422, f"mp4 needs 3 channels, {card.name} makes {card.channels}; ask for format 'npy'")
        image = self._picture("image", request.image, card.image, shape, "model.image_condition=true")
        sketch = self._picture("sketch", request.sketch, card.sketch, shape, "model.control=true")
        image_guidance = None
        if request.image_guidance is not None and card.default_image_guidance is None:
            raise RequestError(422, f"{card.name} has no sampling option 'image_guidance'; drop it")
        if image is not None and card.default_image_guidance is not None:  # a GAN has no guidance to set
            image_guidance = card.default_image_guidance if request.image_guidance is None else request.image_guidance
            if not (math.isfinite(image_guidance) and 0.0 <= image_guidance <= limits.max_guidance):
                raise RequestError(422, f"'image_guidance' {image_guidance} must be in 0..{limits.max_guidance} (1 = none)")
        return Job(seed, request.label, request.caption, frames, steps, guidance, request.format, shape,
                   image, sketch, image_guidance)

    def _picture(self, name: str, data: str | None, supported: bool, shape, fix: str) -> torch.Tensor | None:
        """A base64 PNG / JPEG field -> float [C, H, W] at the sampled shape's size, or a 4xx naming the problem."""
        if data is None:
            return None
        card, limits = self.card, self.config.limits
        if not supported:
            raise RequestError(422, f"{card.name} takes no '{name}' (it was not trained with {fix}); drop it")
        if len(data) > limits.body_limit(1):
            raise RequestError(413, f"'{name}' is {len(data)} base64 characters; the limit is {limits.max_image_bytes} bytes")
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(422, f"'{name}' is not base64: send the PNG / JPEG file's bytes base64-encoded") from None
        try:
            return read_image(raw, shape[1], shape[2], card.channels, limits.max_image_bytes, limits.max_image_pixels)
        except ValueError as exc:
            status = 413 if "limit" in str(exc) else 422
            raise RequestError(status, f"'{name}': {exc}") from None

    def _shape(self, request: GenerateRequest) -> tuple[tuple[int, int, int], int]:
        """(the trained shape to sample at, frames to keep): the requested size (default: the model's), its
        shape with the fewest frames that holds the requested ones (default: the model's clip, or that size's
        longest)."""
        card, limits = self.card, self.config.limits
        height = card.height if request.height is None else request.height
        width = card.width if request.width is None else request.width
        sized = sorted(tuple(s) for s in card.shapes if (s[1], s[2]) == (height, width))
        if not sized:
            trained = ", ".join("x".join(map(str, s)) for s in card.shapes)
            raise RequestError(422, f"{card.name} was not trained at {height}x{width} (height x width); its shapes "
                                    f"(frames x height x width): {trained}")
        if request.frames is None:
            own = (card.frames, card.height, card.width)
            shape = own if own in sized else sized[-1]
            return shape, min(shape[0], limits.max_frames)
        max_frames = min(sized[-1][0], limits.max_frames)
        if not 1 <= request.frames <= max_frames:
            raise RequestError(422, f"'frames' {request.frames} must be in 1..{max_frames}: {card.name} makes clips of "
                                    f"{'/'.join(str(s[0]) for s in sized)} frames at {height}x{width} and a request "
                                    "may ask for the first N of them")
        return next(s for s in sized if s[0] >= request.frames), request.frames

    def _option(self, name: str, value, default):
        if default is None:
            if value is not None:
                raise RequestError(422, f"{self.card.name} ({self.card.family}) has no sampling option '{name}'; "
                                        f"drop it")
            return None
        return default if value is None else value

    # --- running ----------------------------------------------------------------------------------
    def run(self, jobs: list[Job]) -> list[Output]:
        """One Output per job, in order. A failure fails only the requests it belongs to."""
        outputs: list[Output | None] = [None] * len(jobs)
        for done in self.run_groups(jobs):
            for i, out in done:
                outputs[i] = out
        return outputs  # type: ignore[return-value]

    def run_groups(self, jobs: list[Job]) -> Iterator[list[tuple[int, Output]]]:
        """Like ``run``, yielding (job index, Output) pairs as each ``model.sample`` call finishes, so
        the server can answer a request without waiting for the rest of its batch."""
        if self.config.sampling == "fused":
            groups: dict[tuple, list[int]] = {}
            for i, job in enumerate(jobs):
                groups.setdefault(job.options, []).append(i)
            batches = list(groups.values())
        else:
            batches = [[i] for i in range(len(jobs))]
        for indices in batches:
            yield list(zip(indices, self._run_group([jobs[i] for i in indices])))

    def _run_group(self, group: list[Job]) -> list[Output]:
        try:
            videos = self._sample(group)
        except Exception as exc:  # noqa: BLE001  (one bad batch must not take the replica down)
            if len(group) > 1:  # find the culprit: rerun alone so the others still get their videos
                return [out for job in group for out in self._run_group([job])]
            log.exception("generation failed for seed %d", group[0].seed)
            return [Output(error=f"generation failed: {type(exc).__name__}: {exc}")]
        outputs = []
        for row, (job, video) in enumerate(zip(group, videos)):
            try:
                outputs.append(self._encode(job, video[: job.frames], batch=(group[0].seed, len(group), row)))
            except Exception as exc:  # noqa: BLE001
                log.exception("encoding failed for seed %d", job.seed)
                outputs.append(Output(error=f"encoding failed: {type(exc).__name__}: {exc}"))
        return outputs

    def _sample(self, group: list[Job]) -> np.ndarray:
        """uint8 [n, T, H, W, C] for a group of jobs with equal options (one job in per_request mode)."""
        card = self.card
        labels = None
        if card.num_classes and any(job.label is not None for job in group):
            labels = torch.tensor([self._label(job) for job in group], dtype=torch.long)
        captions = [job.caption or "" for job in group] if card.caption else None
        steps, guidance, shape, has_image, has_sketch, image_guidance = group[0].options
        options = {k: v for k, v in (("steps", steps), ("guidance", guidance), ("image_guidance", image_guidance))
                   if v is not None}
        if has_image:
            options["image"] = torch.stack([job.image for job in group])
        if has_sketch:
            options["sketch"] = torch.stack([job.sketch for job in group])
        if shape != (card.frames, card.height, card.width):  # another trained bucket (the DiT samples any grid)
            options.update(frames=shape[0], height=shape[1], width=shape[2])
        with torch.inference_mode():
            video = self.model.sample(len(group), seed=group[0].seed, labels=labels, captions=captions, **options)
        return to_uint8(video).cpu().numpy()

    def _label(self, job: Job) -> int:
        """A job's class; without one (in a fused group that has labelled jobs), a class drawn from its seed."""
        if job.label is not None:
            return job.label
        rng = torch.Generator().manual_seed(job.seed)
        return int(torch.randint(self.card.num_classes, (1,), generator=rng))

    def _encode(self, job: Job, video: np.ndarray, batch: tuple[int, int, int]) -> Output:
        if job.format == "mp4":
            body = encode_mp4(video, fps=self.card.fps)
        else:
            buf = io.BytesIO()
            np.save(buf, np.ascontiguousarray(video), allow_pickle=False)
            body = buf.getvalue()
        headers = {"x-vidgen-seed": str(job.seed), "x-vidgen-frames": str(video.shape[0]),
                   "x-vidgen-model": self.card.name}
        if self.config.sampling == "fused":
            headers |= {"x-vidgen-fused-seed": str(batch[0]), "x-vidgen-fused-size": str(batch[1]),
                        "x-vidgen-fused-row": str(batch[2])}
        return Output(body, MEDIA_TYPES[job.format], headers)

    def warm_up(self) -> None:
        """One small request at start: the first client does not pay lazy initialisation, and a
        checkpoint that cannot sample fails the replica's start with its own error."""
        if self.card.needs_context:
            return
        job = self.validate(GenerateRequest(seed=0, frames=1, steps=1 if self.card.default_steps else None,
                                            format="npy"))
        out = self.run([job])[0]
        if out.error:
            raise RuntimeError(f"{self.card.name} from {self.config.checkpoint} cannot sample: {out.error}")

