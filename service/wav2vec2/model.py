"""Wav2Vec2Model over packed clips: module names follow the Hugging Face checkpoint keys.

One model for the whole family (HuBERT, Data2VecAudio, UniSpeech(Sat), ...): the few modules
that differ are chosen from config.family's switches (family.py), never copied.

Batch invariance by construction: a batch is a list of clips, never a padded tensor with
a mask. The convolutional front end runs on each clip's own samples (so group norm only sees
that clip), the transformer runs on the frames of all clips packed into one (N, D) tensor
(per-frame layers see no padding at all; attention is per clip, see attention.py), and the
few sequence convolutions (positional conv, adapter) pad with zeros, which is exactly what
the clip alone would see at its edges. Padding-free is also the fast choice: no FLOPs are
spent on padding, which is most of a mixed-length batch's cost in transformers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from service.wav2vec2.activations import activation
from service.wav2vec2.attention import AttentionFn, biased_per_clip, select
from service.wav2vec2.config import Wav2Vec2Config
from service.wav2vec2.frontend import FeatureEncoder, FeatureProjection
from service.wav2vec2.packed import Frames, Packed
from service.wav2vec2.resume import Waveform


def positional_conv(config: Wav2Vec2Config, kernel_size: int) -> nn.Conv1d:
    return nn.Conv1d(
        config.hidden_size,
        config.hidden_size,
        kernel_size,
        padding=kernel_size // 2,
        groups=config.num_conv_pos_embedding_groups,
    )


class PositionalConvEmbedding(nn.Module):
    """One grouped conv, weight-normed; or (HuBERT's conv_pos_batch_norm) batch norm, then a
    plain conv."""

    def __init__(self, config: Wav2Vec2Config) -> None:
        super().__init__()
        k = config.num_conv_pos_embeddings
        conv = positional_conv(config, k)
        if config.conv_pos_batch_norm:
            self.batch_norm: nn.Module | None = nn.BatchNorm1d(config.hidden_size)
            self.conv = conv
        else:
            self.batch_norm = None
            # Same parametrization as the checkpoints (keys ...conv.parametrizations.weight.*);
            # loading.py folds it into a plain weight for inference.
            self.conv = nn.utils.parametrizations.weight_norm(conv, name="weight", dim=2)
        self.trim = 1 if k % 2 == 0 else 0  # an even kernel yields one frame too many
        self.activation = activation(config.feat_extract_activation)

    def forward(self, x: Packed) -> Tensor:
        if self.batch_norm is not None:
            # Per frame at inference, so on the packed frames: the conv then pads with zeros
            # as the clip alone does (transformers' padded batch pads with normed zeros).
            x = x.with_data(self.batch_norm(x.data))
        return self.activation(x.conv(self.conv, self.trim))


class PositionalConvLayer(nn.Module):
    """One of Data2VecAudio's positional convs: conv, weightless LayerNorm, activation."""

    def __init__(self, config: Wav2Vec2Config) -> None:
        super().__init__()
        self.conv = positional_conv(config, config.conv_pos_kernel_size)
        self.trim = 1 if config.conv_pos_kernel_size % 2 == 0 else 0
        self.layer_norm = nn.LayerNorm(config.hidden_size, elementwise_affine=False)
        self.activation = activation(config.feat_extract_activation)

    def forward(self, x: Packed) -> Packed:
        return x.with_data(self.activation(self.layer_norm(x.conv(self.conv, self.trim))))


class PositionalConvStack(nn.Module):
    """Data2VecAudio: num_conv_pos_embeddings convs in a row. Each pads its clip with zeros
    (transformers' padded batch pads later convs with the previous conv's output)."""

    def __init__(self, config: Wav2Vec2Config) -> None:
        super().__init__()
        n = config.num_conv_pos_embeddings
        self.layers = nn.ModuleList(PositionalConvLayer(config) for _ in range(n))

    def forward(self, x: Packed) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x.data


class Attention(nn.Module):
    def __init__(self, config: Wav2Vec2Config) -> None:
        super().__init__()
        d = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.q_proj, self.k_proj = nn.Linear(d, d), nn.Linear(d, d)
        self.v_proj, self.out_proj = nn.Linear(d, d), nn.Linear(d, d)
        self.kernel: AttentionFn | None = None  # set by Wav2Vec2Model.set_attention
        self.qkv: nn.Linear | None = None  # q, k, v in one GEMM once loaded (fuse_qkv)

    @torch.no_grad()
    def fuse_qkv(self) -> None:
        """Inference: one (D, 3D) projection instead of three. The checkpoint modules stay
        (state_dict keys unchanged) as views into the fused tensors: the weights held once."""
        projections = (self.q_proj, self.k_proj, self.v_proj)
        d = self.q_proj.in_features
        with torch.device("meta"):  # no init: the fused tensors come from the checkpoint's
            self.qkv = nn.Linear(d, 3 * d)
        weight = torch.cat([p.weight for p in projections])  # (3D, D)
        bias = torch.cat([p.bias for p in projections])  # (3D,)
        self.qkv.weight = nn.Parameter(weight, requires_grad=False)
        self.qkv.bias = nn.Parameter(bias, requires_grad=False)
        for i, p in enumerate(projections):
            p.weight = nn.Parameter(weight[i * d : (i + 1) * d], requires_grad=False)
            p.bias = nn.Parameter(bias[i * d : (i + 1) * d], requires_grad=False)

    def project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x: (N, D) -> q, k, v, (N, H, d_head) each."""
        n = x.shape[0]
        if self.qkv is not None:
            return self.qkv(x).view(n, 3, self.num_heads, -1).unbind(1)  # type: ignore[return-value]
        q, k, v = (
            p(x).view(n, self.num_heads, -1) for p in (self.q_proj, self.k_proj, self.v_proj)
        )
        return q, k, v

    def attend(
        self, q: Tensor, k: Tensor, v: Tensor, frames: Frames, bias: list[Tensor] | None = None
    ) -> Tensor:
        """Each clip's frames attend to that clip's frames: (N, H, d_head) x 3 -> (N, D).
        bias: an additive score bias per clip, (H, T_i, T_i) each, or None."""
        if bias is not None:
            out = biased_per_clip(q, k, v, frames.cu, bias)
        else:
            assert self.kernel is not None
            out = self.kernel(q, k, v, frames.cu, frames.max_len)  # (N, H, d_head)
        return self.out_proj(out.reshape(q.shape[0], -1))

    def forward(self, x: Tensor, frames: Frames, bias: list[Tensor] | None = None) -> Tensor:
        """x: (N, D) -> (N, D)."""
        return self.attend(*self.project(x), frames, bias)


class FeedForward(nn.Module):
    def __init__(self, config: Wav2Vec2Config) -> None:
        super().__init__()
        self.intermediate_dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = activation(config.hidden_act)
        self.output_dense = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.output_dense(self.intermediate_act_fn(self.intermediate_dense(x)))


class AttnAdapterLayer(nn.Module):
    """MMS per-language bottleneck adapter inside each pre-LN layer (adapter_attn_dim)."""

    def __init__(self, config: Wav2Vec2Config) -> None:
        super().__init__()
        assert config.adapter_attn_dim is not None
        self.norm = nn.LayerNorm(config.hidden_size)
        self.linear_1 = nn.Linear(config.hidden_size, config.adapter_attn_dim)
        self.linear_2 = nn.Linear(config.adapter_attn_dim, config.hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(F.relu(self.linear_1(self.norm(x))))


class EncoderLayer(nn.Module):
    """Post-LN (wav2vec2-base) or pre-LN ("stable layer norm", large and MMS) layer."""

    def __init__(self, config: Wav2Vec2Config, attention: Attention | None = None) -> None:
        super().__init__()
        self.pre_ln = config.do_stable_layer_norm
        self.attention = attention or Attention(config)  # WavLM passes its biased one
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.feed_forward = FeedForward(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        use_adapter = self.pre_ln and config.adapter_attn_dim is not None
        self.adapter_layer = AttnAdapterLayer(config) if use_adapter else None

    def forward(self, x: Tensor, frames: Frames) -> Tensor:
        if self.pre_ln:
            x = x + self.attention(self.layer_norm(x), frames)
            x = x + self.feed_forward(self.final_layer_norm(x))
            if self.adapter_layer is not None:
                x = x + self.adapter_layer(x)
            return x
        x = self.layer_norm(x + self.attention(x, frames))
        return self.final_layer_norm(x + self.feed_forward(x))


# The positional modules family.py's switches name; "none": the Conformer, whose positions
# are in its attention (transformers builds its pos_conv_embed but never calls it).
POSITIONAL: dict[str, Callable[[Wav2Vec2Config], nn.Module | None]] = {
    "conv": PositionalConvEmbedding,
    "conv_stack": PositionalConvStack,
    "none": lambda config: None,
}
# Builds encoder layer i: (config, i) -> a module taking (x (N, D), Frames), returning (N, D).
# heads.py picks it by family.encoder_layer (WavLM's and the Conformer's live in their files).
LayerFactory = Callable[[Wav2Vec2Config, int], nn.Module]


def transformer_layer(config: Wav2Vec2Config, i: int) -> nn.Module:
    return EncoderLayer(config)


class Encoder(nn.Module):
    def __init__(self, config: Wav2Vec2Config, make_layer: LayerFactory) -> None:
        super().__init__()
        self.pre_ln = config.do_stable_layer_norm
        self.pos_conv_embed = POSITIONAL[config.family.positional](config)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.layers = nn.ModuleList(make_layer(config, i) for i in range(config.num_hidden_layers))

    def forward(self, x: Packed, keep_hidden_states: bool = False) -> tuple[Tensor, list[Tensor]]:
        """x: Packed (N, D) -> last hidden state (N, D) and, if asked, every layer's input
        plus the last layer's output (transformers 5's `hidden_states`: before the final
        layer norm of pre-LN encoders)."""
        h = x.data if self.pos_conv_embed is None else x.data + self.pos_conv_embed(x)
        if not self.pre_ln:
            h = self.layer_norm(h)
        frames = Frames.of(x)
        states = [h] if keep_hidden_states else []
        for layer in self.layers:
            h = layer(h, frames)
            if keep_hidden_states:
                states.append(h)
        if self.pre_ln:
            h = self.layer_norm(h)
        return h, states


class AdapterLayer(nn.Module):
    def __init__(self, config: Wav2Vec2Config) -> None:
        super().__init__()
        d = config.head_hidden_size
        self.stride = config.adapter_stride
        self.conv = nn.Conv1d(d, 2 * d, config.adapter_kernel_size, stride=self.stride, padding=1)

    def forward(self, x: Packed) -> Packed:
        y = F.glu(self.conv(x.padded().transpose(1, 2)), dim=1).transpose(1, 2)  # (B, T', D)
        # The zeros after a clip are what the conv's own padding gives the clip alone.
        return Packed.from_padded(y, [(n - 1) // self.stride + 1 for n in x.lengths])


class Adapter(nn.Module):
    """Strided conv stack after the encoder (add_adapter), e.g. for speech-to-text decoders."""

    def __init__(self, config: Wav2Vec2Config) -> None:
        super().__init__()
        if config.head_hidden_size != config.hidden_size:
            self.proj: nn.Module | None = nn.Linear(config.hidden_size, config.head_hidden_size)
            self.proj_layer_norm: nn.Module | None = nn.LayerNorm(config.head_hidden_size)
        else:
            self.proj = self.proj_layer_norm = None
        self.layers = nn.ModuleList(AdapterLayer(config) for _ in range(config.num_adapter_layers))

    def forward(self, x: Packed) -> Packed:
        if self.proj is not None and self.proj_layer_norm is not None:
            x = x.with_data(self.proj_layer_norm(self.proj(x.data)))
        for layer in self.layers:
            x = layer(x)
        return x


class Wav2Vec2Model(nn.Module):
    def __init__(
        self, config: Wav2Vec2Config, make_layer: LayerFactory = transformer_layer
    ) -> None:
        super().__init__()
        self.config = config
        self.feature_extractor = FeatureEncoder(config)
        self.feature_projection = FeatureProjection(config)
        if config.has_masked_spec_embed:
            # Training-only SpecAugment vector; kept so checkpoints load strictly.
            self.masked_spec_embed = nn.Parameter(torch.zeros(config.hidden_size))
        self.encoder = Encoder(config, make_layer)
        self.adapter = Adapter(config) if config.add_adapter else None
        self.set_attention("auto")

    def set_attention(self, kind: str) -> str:
        """Chooses the attention kernel for the current device and dtype; returns its name."""
        p = next(self.parameters())
        name, fn = select(kind, p.device.type, p.dtype)
        for attention in self.attentions():
            attention.kernel = fn
        self.attention_kind = name
        return name

    def attentions(self) -> list[Attention]:
        """Every self-attention module, whatever layer class holds it."""
        return [m for m in self.modules() if isinstance(m, Attention)]

    def forward(
        self, waveforms: Sequence[Waveform], keep_hidden_states: bool = False
    ) -> tuple[Packed, list[Tensor]]:
        """waveforms: B normalised clips (T_i,) -> last hidden state, Packed (N, D')."""
        feats = self.feature_extractor(waveforms)  # (N, C)
        x = feats.with_data(self.feature_projection(feats.data))  # (N, D)
        h, states = self.encoder(x, keep_hidden_states)
        out = x.with_data(h)
        if self.adapter is not None:
            out = self.adapter(out)
        return out, states
