"""A frozen Hugging Face text encoder (T5 or CLIP) read from a folder the user gives, with its caption
embeddings cached: the DiT's caption input when ``model.text_encoder`` is ``t5`` or ``clip``.

    python -c "from vidgen_ray.models.pretrained_text import PretrainedTextEncoder as E; \
e = E('t5', '/path/to/t5-folder', 32); print(e.width, e.encode(['a cat'], 'cpu')[0].shape)"

Nothing is downloaded: ``path`` is a folder written by ``save_pretrained`` (the tokenizer's files and the
model's ``config.json`` + weights), local or on object storage (copied once into
``$VIDGEN_RAY_CACHE``/text_encoders/<hash of the URI>, default ``~/.cache/vidgen-ray``). Only the encoder
stack is loaded (``T5EncoderModel``; ``CLIPTextModel``); the output is its last hidden state, a token per
position, padded to ``max_tokens`` and masked. It is frozen, in eval mode, outside the trained part: it is
not in the checkpoint (the checkpoint records the path and ``identity``), the optimiser never sees it, and
each rank loads it on first use onto the device that asks.

Caching: a caption's embedding is computed once per process (an in-memory table keyed by the caption
string, float16, at most ``cache_bytes`` (1 GiB), oldest out first), so an epoch over a dataset's captions
runs the encoder once per caption where they fit, and ``data encode`` stores them on disk.
``identity`` (a hash of the folder's config, weight and tokenizer files) names the embeddings: the same folder gives
the same identity on every machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Literal

import torch

TextEncoderKind = Literal["byte", "t5", "clip"]
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")


def _require_transformers():
    try:
        import transformers
    except ImportError as exc:  # pragma: no cover - the dependency is declared; a trimmed install may lack it
        raise ImportError("model.text_encoder=t5/clip needs the transformers package: pip install 'vidgen-ray[text]'") from exc
    return transformers


def local_folder(path: str) -> Path:
    """A local folder holding ``path``'s files: the folder itself, or a one-time copy of an object-store prefix."""
    from vidgen_ray import storage

    local = storage.local_path(path)
    if local is not None:
        folder = Path(local)
        if not (folder / "config.json").exists():
            raise FileNotFoundError(f"{path} has no config.json: give a folder written by save_pretrained "
                                    "(the encoder's config, weights and tokenizer files)")
        return folder
    cache = Path(os.environ.get("VIDGEN_RAY_CACHE", Path.home() / ".cache" / "vidgen-ray"))
    folder = cache / "text_encoders" / hashlib.sha256(path.encode()).hexdigest()[:16]
    done = folder / ".complete"
    if not done.exists():
        entries = storage.list_files(path)
        if not any(storage.basename(e.uri) == "config.json" for e in entries):
            raise FileNotFoundError(f"{path} has no config.json: give a prefix written by save_pretrained")
        base = path.rstrip("/").split("?", 1)[0]
        for entry in entries:
            relative = entry.uri.split("?", 1)[0][len(base):].lstrip("/")
            target = folder / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f"{target.name}.{os.getpid()}.part")  # ranks on one node copy side by side
            tmp.write_bytes(storage.read_bytes(entry.uri))
            tmp.replace(target)
        done.write_text(path)
    return folder


def folder_identity(folder: Path) -> str:
    """sha256 over the config, the weights and the tokenizer's files: everything the embeddings depend on
    (a fine-tuned encoder of the same sizes is another identity). Reads every weight byte once (seconds
    for a T5-XXL): callers compute it only for cache keys."""
    h = hashlib.sha256()
    names = sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    for name in names:
        if name == "config.json" or name in WEIGHT_FILES or name.startswith("model-") or name.startswith("tokenizer") \
                or name in ("spiece.model", "vocab.json", "merges.txt", "special_tokens_map.json"):
            h.update(name.encode())
            with open(folder / name, "rb") as f:
                for block in iter(lambda: f.read(1 << 24), b""):
                    h.update(block)
    return h.hexdigest()[:16]


def encoder_width(kind: TextEncoderKind, path: str) -> int:
    """The encoder's hidden size, from its config alone (no weights: describe() builds models on meta)."""
    config = json.loads((local_folder(path) / "config.json").read_text())
    if kind == "t5":
        return int(config["d_model"])
    text = config.get("text_config", config)  # a full CLIP checkpoint nests the text tower's config
    return int(text["hidden_size"])


class PretrainedTextEncoder:
    """captions -> (embeddings float [B, max_tokens, width], mask bool [B, max_tokens]) on ``device``."""

    def __init__(self, kind: TextEncoderKind, path: str, max_tokens: int, cache_bytes: int = 1 << 30) -> None:
        if kind not in ("t5", "clip"):
            raise ValueError(f"text encoder kind {kind!r}: choose t5 or clip (byte is the built-in one)")
        self.kind, self.path, self.max_tokens, self.cache_bytes = kind, path, max_tokens, cache_bytes
        self.folder = local_folder(path)
        self.width = encoder_width(kind, path)
        if kind == "clip":  # learned positions: CLIP reads 77 tokens, and no more
            config = json.loads((self.folder / "config.json").read_text())
            limit = int(config.get("text_config", config).get("max_position_embeddings", 77))
            if max_tokens > limit:
                raise ValueError(f"model.max_caption_tokens={max_tokens} is more than this CLIP encoder's {limit} "
                                 f"positions; set it to {limit} or less")
        self._identity: str | None = None
        self._model = self._tokenizer = None
        # caption -> (float16 embedding [L, W], mask [L]), oldest first, at most cache_bytes of embeddings
        self._cache: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self._cached_bytes = 0
        self._lock = threading.Lock()  # Serve replicas may encode from several threads
        self.calls = 0  # encoder forward passes (tests and the cache's benefit read it)

    @property
    def identity(self) -> str:
        if self._identity is None:
            self._identity = folder_identity(self.folder)
        return self._identity

    def _load(self, device: torch.device) -> None:
        transformers = _require_transformers()
        if self._model is None:
            transformers.utils.logging.disable_progress_bar()
            folder = str(self.folder)  # local_files_only: a missing file is an error, never a download
            self._tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
            cls = transformers.T5EncoderModel if self.kind == "t5" else transformers.CLIPTextModel
            self._model = cls.from_pretrained(folder, local_files_only=True).eval().requires_grad_(False)
        if next(self._model.parameters()).device != torch.device(device):
            self._model.to(device)

    @torch.no_grad()
    def encode(self, captions: list[str], device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        device = torch.device(device)
        with self._lock:
            todo = list(dict.fromkeys(c for c in captions if c not in self._cache))
            if todo:
                self._load(device)
                tokens = self._tokenizer(todo, padding="max_length", truncation=True, max_length=self.max_tokens,
                                         return_tensors="pt")
                ids, mask = tokens["input_ids"].to(device), tokens["attention_mask"].to(device)
                mask[:, 0] = 1  # an empty caption keeps one position to attend to (else softmax over nothing)
                hidden = self._model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
                self.calls += 1
                fresh = {caption: (hidden[i].to(torch.float16).cpu(), mask[i].bool().cpu()) for i, caption in enumerate(todo)}
            else:
                fresh = {}
            rows = [fresh[c] if c in fresh else self._cache[c] for c in captions]
            for caption, row in fresh.items():  # kept for the next batches, within the byte budget
                self._cache[caption] = row
                self._cached_bytes += row[0].numel() * 2
            while self._cached_bytes > self.cache_bytes and self._cache:
                self._cached_bytes -= self._cache.popitem(last=False)[1][0].numel() * 2
        embeddings = torch.stack([r[0] for r in rows]).float().to(device)
        masks = torch.stack([r[1] for r in rows]).to(device)
        return embeddings, masks
