"""TensorBoard: event files in ``<run>/tensorboard`` (uploaded beside the checkpoints on object storage).

    tensorboard --logdir outputs/demo/runs          # every run (or Tune trial) under it is one line

Videos are written as TensorBoard writes them in ``add_video``: an animated GIF in an image summary
(the Images tab plays it). ``add_video`` itself encodes through moviepy, whose 2.x API it cannot
import; the GIF is encoded here with Pillow instead, into the same protobuf.
"""

from __future__ import annotations

import io
from typing import Any, Mapping

import numpy as np
import yaml

from vidgen_ray import storage
from vidgen_ray.tracking.base import LocalFolder, Tracker, TrackerRun, tile

SUBDIR = "tensorboard"


def gif_bytes(frames: np.ndarray, fps: float) -> bytes:
    """uint8 [T, H, W, 3] -> an animated GIF that loops."""
    from PIL import Image

    images = [Image.fromarray(np.ascontiguousarray(f)) for f in frames]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=max(20, round(1000 / fps)), loop=0)
    return buf.getvalue()


def png_bytes(image: np.ndarray) -> bytes:
    from vidgen_ray.media import encode_png

    return encode_png(image)


def _image_summary(tag: str, encoded: bytes, height: int, width: int):
    from tensorboard.compat.proto.summary_pb2 import Summary

    image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=encoded)
    return Summary(value=[Summary.Value(tag=tag, image=image)])


class TensorBoardTracker(Tracker):
    def __init__(self, run: TrackerRun) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.folder = LocalFolder(storage.join(run.run_dir, SUBDIR))
        # purge_step: a run (re)started at step k hides what an earlier attempt logged after k, from a
        # failure before the first checkpoint (k = 0) too.
        self.writer = SummaryWriter(log_dir=str(self.folder.path), purge_step=run.start_step + 1, flush_secs=20)
        if run.config:
            self.log_config(run.config)

    def log_scalars(self, values: Mapping[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, float(value), global_step=step)

    def log_video(self, tag: str, videos: np.ndarray, step: int, fps: float) -> None:
        grid = tile(videos)
        self.writer._get_file_writer().add_summary(_image_summary(tag, gif_bytes(grid, fps), *grid.shape[1:3]), step)

    def log_image(self, tag: str, image: np.ndarray, step: int) -> None:
        self.writer._get_file_writer().add_summary(_image_summary(tag, png_bytes(image), *image.shape[:2]), step)

    def log_config(self, config: Mapping[str, Any]) -> None:
        text = yaml.safe_dump(dict(config), sort_keys=False)
        # Markdown: indented four spaces, the text plugin shows it as a code block.
        self.writer.add_text("config", "\n".join("    " + line for line in text.splitlines()))

    def log_artifact(self, path: str) -> None:
        pass  # TensorBoard has no artifact store; the file already sits in the run's folder

    def flush(self) -> None:
        self.writer.flush()

    def sync(self) -> None:
        self.writer.flush()
        self.folder.upload()

    def finish(self, failed: bool = False) -> None:
        self.writer.close()
        self.folder.close()
