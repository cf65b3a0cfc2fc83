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

import functools
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from service.wav2vec2.config import Wav2Vec2Config
from service.wav2vec2.model import Attention, EncoderLayer
from service.wav2vec2.packed import Frames


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
        self.flex = False  # use_flex(): FlexAttention instead of per-clip SDPA with a mask

    def table(self, max_len: int) -> Tensor:
        """The ungated bias by distance, (H, 2 max_len - 1): column max_len - 1 + (key - query).
        It depends on key - query only, so one table serves every clip of the batch."""
        distance = torch.arange(1 - max_len, max_len, device=self.rel_attn_embed.weight.device)
        buckets = relative_buckets(distance, self.num_buckets, self.max_distance)
        return self.rel_attn_embed(buckets).T  # (H, 2 max_len - 1)

    def gate(self, x: Tensor) -> Tensor:
        """x: (N, D) attention input -> (N, H) factor on each query frame's bias row."""
        n = x.shape[0]
        proj = self.gru_rel_pos_linear(x.view(n, self.num_heads, -1))  # (N, H, 8)
        gate_a, gate_b = torch.sigmoid(proj.view(n, self.num_heads, 2, 4).sum(-1)).unbind(-1)
        return gate_a * (gate_b * self.gru_rel_pos_const.view(1, -1) - 1.0) + 2.0

    def forward(self, x: Tensor, frames: Frames, bias: list[Tensor] | None = None) -> Tensor:
        """x: (N, D) -> (N, D). Layer 0 leaves the bias table in frames for the others."""
        if frames.position_bias is None:
            frames.position_bias = self.table(frames.max_len)
        table, gate = frames.position_bias, self.gate(x)  # (H, 2L - 1), (N, H)
        q, k, v = self.project(x)
        if self.flex:
            out = flex_biased(q, k, v, frames, table, gate)
            return self.out_proj(out.reshape(x.shape[0], -1))
        bounds, offset = frames.cu.tolist(), frames.max_len - 1
        gated = []
        for a, b in zip(bounds[:-1], bounds[1:]):
            pos = torch.arange(b - a, device=x.device)
            clip = table[:, pos[None, :] - pos[:, None] + offset]  # (H, T, T)
            gated.append(gate[a:b].T[:, :, None] * clip)  # gate per query row
        return self.attend(q, k, v, frames, gated)


def flex_biased(
    q: Tensor, k: Tensor, v: Tensor, frames: Frames, table: Tensor, gate: Tensor
) -> Tensor:
    """FlexAttention over the packed (N, H, d) tensors: a same-clip block mask, and the gated
    bias as a score modifier read from the (H, 2L - 1) table, so no (H, T, T) bias is
    materialised. Compiled on first use (about 2 minutes on this CPU, where it brings nothing
    over per-clip SDPA; meant for CUDA, where it replaces B small kernels by one)."""
    from torch.nn.attention.flex_attention import create_block_mask

    lengths = torch.tensor(frames.lengths, device=q.device)
    clip = torch.repeat_interleave(torch.arange(len(frames.lengths), device=q.device), lengths)
    last = table.shape[1] - 1
    offset = frames.max_len - 1

    def same_clip(b: Tensor, h: Tensor, qi: Tensor, ki: Tensor) -> Tensor:
        return clip[qi] == clip[ki]

    def score_mod(score: Tensor, b: Tensor, h: Tensor, qi: Tensor, ki: Tensor) -> Tensor:
        # Pairs across clips are masked out, but their index must stay inside the table.
        return score + gate[qi, h] * table[h, (ki - qi + offset).clamp(0, last)]

    n = q.shape[0]
    mask = create_block_mask(same_clip, None, None, n, n, device=q.device)
    packed = [t.transpose(0, 1)[None] for t in (q, k, v)]  # (1, H, N, d)
    out = _flex_attention()(*packed, score_mod=score_mod, block_mask=mask)
    return out[0].transpose(0, 1)  # (N, H, d)


@functools.cache
def _flex_attention() -> Callable[..., Tensor]:
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=True)


def use_flex(model: nn.Module, on: bool = True) -> None:
    """Switches every WavLM attention of `model` to FlexAttention (or back)."""
    for module in model.modules():
        if isinstance(module, WavLMAttention):
            module.flex = on


def wavlm_layer(config: Wav2Vec2Config, i: int) -> EncoderLayer:
    """Wav2Vec2's post-LN or pre-LN layer around WavLM's attention; layer 0 holds the table."""
    return EncoderLayer(config, WavLMAttention(config, has_table=i == 0))
