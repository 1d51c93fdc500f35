"""The ``POST /generate`` request body and the errors a request can earn.

Two layers of checks: pydantic takes the shape (known fields only, strict JSON types), then
``engine.Engine.validate`` checks the values against the server's limits and the loaded model
(class range, caption support, frame count, sampling options it has).

    {"class": 3, "caption": "a red ball", "seed": 7, "frames": 8, "steps": 8, "guidance": 2.0, "format": "mp4"}

Image-to-video models take ``image`` (base64 PNG / JPEG; resized to cover the clip and centre-cropped, like the
training clips' frames), control models a ``sketch`` picture (its Sobel edges steer every frame); both are bounded
in bytes and pixels (``limits.max_image_bytes`` / ``max_image_pixels``) and ``GET /metadata`` says which a model
takes (``image``, ``sketch``).

A model trained on buckets of shapes (``data.buckets``) samples at any of them: ``height`` and ``width`` pick
the bucket's size and ``frames`` the first N frames of the shortest trained clip of that size that holds N
(without ``frames``: the model's own clip, or that size's longest; ``GET /metadata`` lists ``shapes``);
another size is a 422.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

OutputFormat = Literal["mp4", "npy"]
MEDIA_TYPES: dict[str, str] = {"mp4": "video/mp4", "npy": "application/x-npy"}


class GenerateRequest(BaseModel):
    """Every field is optional: the defaults make one video the way the checkpoint was trained."""

    # strict: "3" is not a class and true is not a seed; extra="forbid": a typo is an error, not ignored.
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    label: int | None = Field(default=None, alias="class", description="class index for class-conditional models")
    caption: str | None = Field(default=None, description="text for caption-conditional models")
    seed: int | None = Field(default=None,
                             description="the same seed gives the same video; the server picks one if absent")
    frames: int | None = Field(default=None, description="first N frames of the clip (default: all of the model's "
                                                         "own, or of the longest trained one at the size asked for)")
    height: int | None = Field(default=None, description="a trained shape's height (default: the model's)")
    width: int | None = Field(default=None, description="a trained shape's width (default: the model's)")
    steps: int | None = Field(default=None, description="sampling steps (transformer)")
    guidance: float | None = Field(default=None, description="classifier-free guidance scale, 1 = none (transformer)")
    image: str | None = Field(default=None, description="base64 PNG / JPEG: the first frame (image-to-video models)")
    image_guidance: float | None = Field(default=None, description="guidance scale on the image, 1 = none (transformer)")
    sketch: str | None = Field(default=None, description="base64 PNG / JPEG whose edges steer the video (control models)")
    format: OutputFormat = Field(default="mp4", description="mp4 (H.264) or npy (uint8 [T, H, W, C])")


class RequestError(Exception):
    """A request the server will not run; ``status`` is the HTTP code (4xx), the message says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def parse_request(body: bytes, max_body_bytes: int) -> GenerateRequest:
    """Raw body -> request, or RequestError: 413 too large, 400 not JSON, 422 wrong fields or types."""
    if len(body) > max_body_bytes:
        raise RequestError(413, f"request body is {len(body)} bytes; the limit is {max_body_bytes}")
    if not body.strip():
        raise RequestError(400, 'empty body: POST a JSON object, e.g. {"seed": 0}')
    try:
        return GenerateRequest.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        if any(e["type"] == "json_invalid" for e in errors):
            raise RequestError(400, f"body is not valid JSON: {errors[0]['msg']}") from None
        raise RequestError(422, "; ".join(_describe(e) for e in errors)) from None


def _describe(error: dict) -> str:
    where = ".".join(str(p) for p in error["loc"]) or "body"
    if error["type"] == "extra_forbidden":
        known = ", ".join(sorted(f.alias or name for name, f in GenerateRequest.model_fields.items()))
        return f"unknown field {where!r}; known fields: {known}"
    if error["type"] == "model_type":
        return 'the body must be a JSON object, e.g. {"seed": 0}'
    return f"field {where!r}: {error['msg']}"
