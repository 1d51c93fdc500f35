"""The table behind ``vidgen-ray models``: every preset with its family, shapes, parameter count
and forward FLOPs per sample.

    python -m vidgen_ray.models.listing            # human table
    python -m vidgen_ray.models.listing --json     # for machines
    python -m vidgen_ray.models.listing --update-docs docs/models.md   # refresh the docs table
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .base import VideoShape
from .flops import human_count, human_flops
from .registry import PRESETS, describe

DOCS_BEGIN = "<!-- models-table:begin (generated: python -m vidgen_ray.models.listing --update-docs docs/models.md) -->"
DOCS_END = "<!-- models-table:end -->"


def _shape(s: VideoShape) -> str:
    return f"{s.frames}x{s.height}x{s.width}x{s.channels}"


def models_table(as_json: bool = False) -> str:
    infos = [describe(name) for name in PRESETS]
    if as_json:
        return json.dumps([info.as_dict() for info in infos], indent=2)
    header = ("preset", "family", "input TxHxWxC", "model space", "params", "FLOPs/sample")
    rows = [
        (
            info.name,
            info.family,
            _shape(info.input_shape),
            "pixels" if info.model_shape == info.input_shape else f"latent {_shape(info.model_shape)}",
            human_count(info.params),
            human_flops(info.flops_per_sample),
        )
        for info in infos
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in (header, *rows)]
    return "\n".join(lines)


def update_docs(path: Path) -> None:
    """Rewrite the generated table between the markers of ``path`` (a Markdown file)."""
    text = path.read_text()
    start, end = text.index(DOCS_BEGIN) + len(DOCS_BEGIN), text.index(DOCS_END)
    path.write_text(text[:start] + "\n```\n" + models_table() + "\n```\n" + text[end:])


if __name__ == "__main__":
    args = sys.argv[1:]
    if "--update-docs" in args:
        update_docs(Path(args[args.index("--update-docs") + 1]))
    else:
        print(models_table(as_json="--json" in args))
