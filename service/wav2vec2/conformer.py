"""Wav2Vec2-Conformer's encoder layer: half-step feed-forward, self-attention with rotary or
relative positions (or none), the convolution module, half-step feed-forward, layer norm.

Positions are counted from each clip's first frame, so a packed clip sees the positions it
would see alone; the depthwise conv pads each clip with zeros on its own (Packed.conv), where
transformers' padded batch lets a clip's last frames see the padding after it (so transformers
is compared one clip at a time). transformers builds a positional conv for this model but never
calls it: family.py drops its weights at load.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from service.wav2vec2.activations import activation
from service.wav2vec2.config import Wav2Vec2Config
from service.wav2vec2.model import Attention, FeedForward
from service.wav2vec2.packed import Frames, Packed


@functools.lru_cache(maxsize=16)
def rotary_table(length: int, dim: int, base: float, device: torch.device) -> tuple[Tensor, Tensor]:
    """cos, sin of positions 0..length-1, (length, dim) fp32, as transformers computes them."""
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    freqs = torch.arange(length).float()[:, None] * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1).to(device)
    return emb.cos(), emb.sin()


@functools.lru_cache(maxsize=16)
def relative_sinusoids(length: int, dim: int, device: torch.device) -> Tensor:
    """Sinusoids of relative positions length-1 .. -(length-1) (key left of query is
    positive), (2 * length - 1, dim) fp32: transformers' RelPositionalEmbedding rows."""
    position = torch.arange(length - 1, -length, -1, dtype=torch.int64).float()[:, None]
    div_term = torch.exp(
        torch.arange(0, dim, 2, dtype=torch.int64).float() * -(math.log(1e4) / dim)
    )
    pe = torch.zeros(2 * length - 1, dim)
    pe[:, 0::2] = torch.sin(position * div_term)
    pe[:, 1::2] = torch.cos(position * div_term)
    return pe.to(device)


def positions(frames: Frames, device: torch.device) -> Tensor:
    """(N,) each packed frame's index within its own clip."""
    return torch.cat([torch.arange(n, device=device) for n in frames.lengths])


class ConformerAttention(Attention):
    """Attention (checkpoint's linear_q/k/v/out renamed to q/k/v/out_proj by family.py) with
    the Conformer's positions: rotary rotates the input of q and k (not q and k themselves);
    relative adds Transformer-XL's content bias u to q and a position score bias per clip."""

    def __init__(self, config: Wav2Vec2Config) -> None:
        super().__init__(config)
        self.kind = config.position_embeddings_type
        self.rotary_base = config.rotary_embedding_base
        d, h = config.hidden_size, config.num_attention_heads
        if self.kind == "relative":
            self.linear_pos = nn.Linear(d, d, bias=False)
            self.pos_bias_u = nn.Parameter(torch.zeros(h, d // h))
            self.pos_bias_v = nn.Parameter(torch.zeros(h, d // h))

    def fuse_qkv(self) -> None:
        """Rotary projects q and k from the rotated input and v from the plain one: three GEMMs
        on two inputs, nothing to fuse (qkv stays None, q/k/v_proj stay modules of their own)."""
        if self.kind != "rotary":
            super().fuse_qkv()

    def forward(self, x: Tensor, frames: Frames, bias: list[Tensor] | None = None) -> Tensor:
        """x: (N, D) -> (N, D)."""
        if self.kind == "rotary":
            n = x.shape[0]
            rotated = self.rotate(x, frames)
            q, k = (p(rotated).view(n, self.num_heads, -1) for p in (self.q_proj, self.k_proj))
            v = self.v_proj(x).view(n, self.num_heads, -1)
        else:
            q, k, v = self.project(x)
        if self.kind == "relative":
            bias = self.position_scores(q, frames)
            q = q + self.pos_bias_u
        return self.attend(q, k, v, frames, bias)

    def rotate(self, x: Tensor, frames: Frames) -> Tensor:
        """Rotary embedding of each frame's position within its clip, applied per head."""
        n, d = x.shape
        cos, sin = rotary_table(frames.max_len, d // self.num_heads, self.rotary_base, x.device)
        at = positions(frames, x.device)
        cos, sin = (t[at, None].to(x.dtype) for t in (cos, sin))  # (N, 1, d_head)
        heads = x.view(n, self.num_heads, -1)  # (N, H, d_head)
        first, second = heads.chunk(2, dim=-1)
        return (heads * cos + torch.cat((-second, first), dim=-1) * sin).view(n, d)

    def position_scores(self, q: Tensor, frames: Frames) -> list[Tensor]:
        """Per clip (H, T, T): (q_i + v) . W_pos sinusoid(i - j), scaled as q . k is."""
        n_max, (_, h, d_head) = frames.max_len, q.shape
        table = relative_sinusoids(n_max, h * d_head, q.device).to(q.dtype)
        pos = self.linear_pos(table).view(2 * n_max - 1, h, d_head)  # rows: n_max-1 .. -(n_max-1)
        q = q + self.pos_bias_v
        bounds = frames.cu.tolist()
        scores = []
        for a, b in zip(bounds[:-1], bounds[1:]):
            t = b - a
            clip_pos = pos[n_max - t : n_max + t - 1]  # relative positions t-1 .. -(t-1)
            raw = torch.einsum("ihd,mhd->him", q[a:b], clip_pos)  # (H, T, 2T - 1)
            i = torch.arange(t, device=q.device)
            index = (t - 1) - i[:, None] + i[None, :]  # row of position i - j
            scores.append(raw.gather(2, index.expand(h, t, t)) * d_head**-0.5)
        return scores


class ConvolutionModule(nn.Module):
    """LayerNorm, pointwise conv, GLU, depthwise conv (+ BatchNorm, folded at load),
    activation, pointwise conv; the pointwise convs run as matmuls on the packed frames."""

    def __init__(self, config: Wav2Vec2Config) -> None:
        super().__init__()
        d, k = config.hidden_size, config.conv_depthwise_kernel_size
        self.layer_norm = nn.LayerNorm(d)
        self.pointwise_conv1 = nn.Conv1d(d, 2 * d, 1, bias=False)
        self.depthwise_conv = nn.Conv1d(d, d, k, padding=(k - 1) // 2, groups=d, bias=False)
        self.batch_norm: nn.BatchNorm1d | None = nn.BatchNorm1d(d)
        self.activation = activation(config.hidden_act)
        self.pointwise_conv2 = nn.Conv1d(d, d, 1, bias=False)

    @torch.no_grad()
    def fold_batch_norm(self) -> None:
        """Inference: BatchNorm's running statistics become the depthwise conv's scale and
        bias, one op less per layer. Folded in fp32 (before any dtype cast)."""
        bn, conv = self.batch_norm, self.depthwise_conv
        assert bn is not None and bn.running_var is not None and bn.running_mean is not None
        scale = bn.weight.float() / torch.sqrt(bn.running_var.float() + bn.eps)  # (D,)
        bias = bn.bias.float() - bn.running_mean.float() * scale
        conv.weight = nn.Parameter(conv.weight.float() * scale[:, None, None], requires_grad=False)
        conv.bias = nn.Parameter(bias, requires_grad=False)
        self.batch_norm = None

    def forward(self, x: Tensor, frames: Frames) -> Tensor:
        """x: (N, D) -> (N, D); the depthwise conv sees each clip alone."""
        y = F.linear(self.layer_norm(x), self.pointwise_conv1.weight[:, :, 0])  # (N, 2D)
        y = F.glu(y, dim=-1)  # (N, D)
        y = Packed(y, frames.lengths).conv(self.depthwise_conv)
        if self.batch_norm is not None:  # only before fold_batch_norm
            y = self.batch_norm(y)
        return F.linear(self.activation(y), self.pointwise_conv2.weight[:, :, 0])


class ConformerLayer(nn.Module):
    """Macaron block: x + FF/2, + attention, + convolution, + FF/2, then LayerNorm."""

    def __init__(self, config: Wav2Vec2Config) -> None:
        super().__init__()
        d = config.hidden_size
        self.ffn1_layer_norm, self.ffn1 = nn.LayerNorm(d), FeedForward(config)
        self.self_attn_layer_norm, self.self_attn = nn.LayerNorm(d), ConformerAttention(config)
        self.conv_module = ConvolutionModule(config)
        self.ffn2_layer_norm, self.ffn2 = nn.LayerNorm(d), FeedForward(config)
        self.final_layer_norm = nn.LayerNorm(d)

    def forward(self, x: Tensor, frames: Frames) -> Tensor:
        x = x + 0.5 * self.ffn1(self.ffn1_layer_norm(x))
        x = x + self.self_attn(self.self_attn_layer_norm(x), frames)
        x = x + self.conv_module(x, frames)
        x = x + 0.5 * self.ffn2(self.ffn2_layer_norm(x))
        return self.final_layer_norm(x)


def conformer_layer(config: Wav2Vec2Config, i: int) -> ConformerLayer:
    return ConformerLayer(config)
