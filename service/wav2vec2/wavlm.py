"""WavLM's encoder layer: Wav2Vec2's layer whose attention adds a gated relative position bias.

The bias (transformers' WavLMAttention.compute_bias): relative positions key - query fall in
`num_buckets` log-spaced buckets (half per direction, exact below a quarter of them, then
logarithmic up to `max_bucket_distance`), each bucket a learned score per head. The table is
in layer 0 only (`rel_attn_embed`), and every layer reuses layer 0's (ungated) bias. Each layer
gates it per query frame and head with sigmoid gates read from that frame's own input
(`gru_rel_pos_linear`, `gru_rel_pos_const`), so the bias a clip gets depends on its own frames
only: batch invariance holds as for Wav2Vec2.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from service.wav2vec2.config import Wav2Vec2Config
from service.wav2vec2.model import Attention, EncoderLayer, Frames


def relative_buckets(relative: Tensor, num_buckets: int, max_distance: int) -> Tensor:
    """Relative positions (key - query) -> bucket ids, transformers' arithmetic to the bit."""
    half = num_buckets // 2
    buckets = (relative > 0).to(torch.long) * half  # keys after the query: upper half
    distance = relative.abs()
    max_exact = half // 2
    log_ratio = torch.log(distance.float() / max_exact) / math.log(max_distance / max_exact)
    far = (max_exact + log_ratio * (half - max_exact)).to(torch.long).clamp(max=half - 1)
    return buckets + torch.where(distance < max_exact, distance, far)


class WavLMAttention(Attention):
    """Attention (same q/k/v/out keys) plus the gate, and in layer 0 the bias table."""

    def __init__(self, config: Wav2Vec2Config, has_table: bool) -> None:
        super().__init__(config)
        h = config.num_attention_heads
        self.num_buckets, self.max_distance = config.num_buckets, config.max_bucket_distance
        self.gru_rel_pos_const = nn.Parameter(torch.ones(1, h, 1, 1))
        self.gru_rel_pos_linear = nn.Linear(config.hidden_size // h, 8)
        if has_table:
            self.rel_attn_embed = nn.Embedding(self.num_buckets, h)

    def table(self, length: int) -> Tensor:
        """The ungated bias of a `length`-frame clip, (H, T, T); a shorter clip's is its
        top-left corner (it depends on key - query only)."""
        pos = torch.arange(length, device=self.rel_attn_embed.weight.device)
        buckets = relative_buckets(pos[None, :] - pos[:, None], self.num_buckets, self.max_distance)
        return self.rel_attn_embed(buckets).permute(2, 0, 1)  # (H, T, T)

    def gate(self, x: Tensor) -> Tensor:
        """x: (N, D) attention input -> (N, H) factor on each query frame's bias row."""
        n = x.shape[0]
        proj = self.gru_rel_pos_linear(x.view(n, self.num_heads, -1))  # (N, H, 8)
        gate_a, gate_b = torch.sigmoid(proj.view(n, self.num_heads, 2, 4).sum(-1)).unbind(-1)
        return gate_a * (gate_b * self.gru_rel_pos_const.view(1, -1) - 1.0) + 2.0

    def forward(self, x: Tensor, frames: Frames, bias: list[Tensor] | None = None) -> Tensor:
        """x: (N, D) -> (N, D). Layer 0 leaves each clip's ungated bias in frames."""
        if frames.position_bias is None:
            table = self.table(frames.max_len)
            frames.position_bias = [table[:, :n, :n] for n in frames.lengths]
        gate = self.gate(x)  # (N, H)
        bounds = frames.cu.tolist()
        gated = [
            gate[a:b].T[:, :, None] * clip  # (H, T, 1) * (H, T, T)
            for a, b, clip in zip(bounds[:-1], bounds[1:], frames.position_bias)
        ]
        return super().forward(x, frames, gated)


def wavlm_layer(config: Wav2Vec2Config, i: int) -> EncoderLayer:
    """Wav2Vec2's post-LN or pre-LN layer around WavLM's attention; layer 0 holds the table."""
    return EncoderLayer(config, WavLMAttention(config, has_table=i == 0))
