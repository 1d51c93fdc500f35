"""A small byte-level caption encoder trained jointly with the video transformer (no downloaded
tokenizer or weights): UTF-8 bytes -> embeddings -> a few pre-norm transformer layers.

    python -c "from vidgen_ray.models.text_encoder import encode_captions; \
print(encode_captions(['a cat', ''], 8))"

Captions are padded or cut to a fixed ``max_len`` so every batch has the same shape (static shapes
for torch.compile). Token 0 is padding, 1 marks the start (so even the empty caption used for
classifier-free guidance has one real token to attend to), 2 + b is byte b.
"""

from __future__ import annotations

import torch
from torch import nn

from .flops import attention_flops, linear_flops
from .transformer_layers import MLP, LayerNorm32, SelfAttention

PAD, BOS, BYTE_OFFSET = 0, 1, 2
VOCAB = 256 + BYTE_OFFSET


def encode_captions(captions: list[str], max_len: int) -> torch.Tensor:
    """Captions -> int64 [len(captions), max_len] of byte tokens (longer captions are cut)."""
    ids = torch.full((len(captions), max_len), PAD, dtype=torch.long)
    for row, caption in enumerate(captions):
        tokens = [BOS] + [b + BYTE_OFFSET for b in caption.encode("utf-8")[: max_len - 1]]
        ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
    return ids


class TextLayer(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = LayerNorm32(width)
        self.attn = SelfAttention(width, heads, qk_norm=False, dropout=dropout)
        self.norm2 = LayerNorm32(width)
        self.mlp = MLP(width, 4 * width, dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), mask)
        return x + self.mlp(self.norm2(x))


class ByteTextEncoder(nn.Module):
    """ids [B, L] -> (tokens [B, L, out_dim], mask [B, L] with True on real tokens)."""

    def __init__(self, width: int, depth: int, heads: int, max_len: int, out_dim: int, dropout: float) -> None:
        super().__init__()
        self.width, self.max_len, self.out_dim = width, max_len, out_dim
        self.embed = nn.Embedding(VOCAB, width)
        self.position = nn.Parameter(torch.randn(max_len, width) * 0.02)
        self.layers = nn.ModuleList(TextLayer(width, heads, dropout) for _ in range(depth))
        self.norm = LayerNorm32(width)
        self.proj = nn.Linear(width, out_dim)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = ids != PAD
        x = self.embed(ids) + self.position.to(self.embed.weight.dtype)
        key_mask = mask[:, None, None, :]  # every query may look at every real token
        for layer in self.layers:
            x = layer(x, key_mask)
        return self.proj(self.norm(x)), mask

    def flops(self) -> int:
        w, length = self.width, self.max_len
        per_layer = (
            linear_flops(w, 3 * w, length)
            + attention_flops(1, length, length, w)
            + linear_flops(w, w, length)
            + 2 * linear_flops(w, 4 * w, length)
        )
        return len(self.layers) * per_layer + linear_flops(w, self.out_dim, length)
