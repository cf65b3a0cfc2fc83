"""The task heads on top of Wav2Vec2Model, named like transformers' classes and keys.

Every head takes a list of normalised clips and returns one result per clip; pooling is
over each clip's own frames, so no head sees another clip's padding. The heads are the same
for the whole family: only the backbone's attribute (its key prefix) changes, "hubert" for
HubertForCTC, so HubertForCTC's keys load into Wav2Vec2ForCTC(config) as they are.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from service.wav2vec2.config import Wav2Vec2Config
from service.wav2vec2.conformer import conformer_layer
from service.wav2vec2.features import FeatureExtractor
from service.wav2vec2.model import LayerFactory, Wav2Vec2Model, transformer_layer
from service.wav2vec2.packed import Packed
from service.wav2vec2.resume import Resume, Waveform, model_inputs
from service.wav2vec2.wavlm import wavlm_layer

# The encoder layer each family builds (family.encoder_layer).
ENCODER_LAYERS: dict[str, LayerFactory] = {
    "transformer": transformer_layer,
    "wavlm": wavlm_layer,
    "conformer": conformer_layer,
}


class Head(nn.Module):
    """Backbone under its family's prefix (`wav2vec2.`, `hubert.`, ...), plus the optional
    learned layer mix."""

    def __init__(self, config: Wav2Vec2Config) -> None:
        super().__init__()
        self.config = config
        self.prefix = config.family.prefix
        make_layer = ENCODER_LAYERS[config.family.encoder_layer]
        self.add_module(self.prefix, Wav2Vec2Model(config, make_layer))
        self.weighted = config.use_weighted_layer_sum and type(self) is not Wav2Vec2ForCTC
        if self.weighted:
            num_layers = config.num_hidden_layers + 1  # transformer layers + their input
            self.layer_weights = nn.Parameter(torch.ones(num_layers) / num_layers)

    @property
    def backbone(self) -> Wav2Vec2Model:
        module = getattr(self, self.prefix)
        assert isinstance(module, Wav2Vec2Model)
        return module

    def hidden(self, waveforms: Sequence[Waveform]) -> Packed:
        """Last hidden state, or the softmax-weighted sum of all layers, Packed (N, D)."""
        out, states = self.backbone(waveforms, keep_hidden_states=self.weighted)
        if not self.weighted:
            return out
        weights = self.layer_weights.softmax(dim=-1)
        mixed = (torch.stack(states) * weights[:, None, None]).sum(dim=0)
        return out.with_data(mixed)

    def infer(
        self,
        clips: list[np.ndarray],
        features: FeatureExtractor,
        resume: Sequence[Resume | None] = (),
    ) -> list[np.ndarray]:
        """Raw clips (T_i,) -> this head's output per clip as float32 numpy: (frames_i, C) for
        per-frame heads, (C,) for pooled ones. Each clip is normalised over itself and moved to
        the weights' device and dtype; all run in one padding-free forward pass. A clip with a
        Resume is a stream window that reuses its stream's front-end frames (resume.py)."""
        inputs = model_inputs(clips, features, next(self.parameters()), resume)
        with torch.inference_mode():
            out = self(inputs)
        parts = out.split() if isinstance(out, Packed) else list(out)
        return [x.float().cpu().numpy() for x in parts]


class Wav2Vec2ForCTC(Head):
    def __init__(self, config: Wav2Vec2Config) -> None:
        super().__init__(config)
        assert config.vocab_size is not None
        self.lm_head = nn.Linear(config.head_hidden_size, config.vocab_size)

    def forward(self, waveforms: Sequence[Waveform]) -> Packed:
        """-> logits, Packed (N, vocab)."""
        h = self.hidden(waveforms)
        return h.with_data(self.lm_head(h.data))


class Wav2Vec2ForSequenceClassification(Head):
    def __init__(self, config: Wav2Vec2Config) -> None:
        super().__init__(config)
        self.projector = nn.Linear(config.hidden_size, config.classifier_proj_size)
        self.classifier = nn.Linear(config.classifier_proj_size, config.num_labels)

    def forward(self, waveforms: Sequence[Waveform]) -> Tensor:
        """-> logits (B, num_labels), from the mean of each clip's projected frames."""
        h = self.hidden(waveforms)
        pooled = torch.stack(
            [x.mean(dim=0) for x in Packed(self.projector(h.data), h.lengths).split()]
        )
        return self.classifier(pooled)


class Wav2Vec2ForAudioFrameClassification(Head):
    def __init__(self, config: Wav2Vec2Config) -> None:
        super().__init__(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, waveforms: Sequence[Waveform]) -> Packed:
        """-> logits, Packed (N, num_labels)."""
        h = self.hidden(waveforms)
        return h.with_data(self.classifier(h.data))


class TDNNLayer(nn.Module):
    """A dilated conv stored as a Linear over (kernel * in) inputs, as in the checkpoints."""

    def __init__(self, config: Wav2Vec2Config, i: int) -> None:
        super().__init__()
        self.in_dim = config.tdnn_dim[i - 1] if i > 0 else config.tdnn_dim[0]
        self.out_dim = config.tdnn_dim[i]
        self.kernel_size = config.tdnn_kernel[i]
        self.dilation = config.tdnn_dilation[i]
        self.kernel = nn.Linear(self.in_dim * self.kernel_size, self.out_dim)

    def forward(self, x: Tensor) -> Tensor:
        """x: (1, T, C_in) -> (1, T - dilation * (kernel - 1), C_out)."""
        w = self.kernel.weight.view(self.out_dim, self.kernel_size, self.in_dim).transpose(1, 2)
        y = F.conv1d(x.transpose(1, 2), w, self.kernel.bias, dilation=self.dilation)
        return F.relu(y.transpose(1, 2))


class AMSoftmaxLoss(nn.Module):
    """Only holds the training objective's weight so checkpoints load strictly."""

    def __init__(self, input_dim: int, num_labels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(input_dim, num_labels))


class Wav2Vec2ForXVector(Head):
    def __init__(self, config: Wav2Vec2Config) -> None:
        super().__init__(config)
        self.projector = nn.Linear(config.hidden_size, config.tdnn_dim[0])
        self.tdnn = nn.ModuleList(TDNNLayer(config, i) for i in range(len(config.tdnn_dim)))
        self.feature_extractor = nn.Linear(config.tdnn_dim[-1] * 2, config.xvector_output_dim)
        self.classifier = nn.Linear(config.xvector_output_dim, config.xvector_output_dim)
        self.objective = AMSoftmaxLoss(config.xvector_output_dim, config.num_labels)

    def forward(self, waveforms: Sequence[Waveform]) -> Tensor:
        """-> speaker embeddings (B, xvector_output_dim), statistics-pooled per clip."""
        h = self.hidden(waveforms)
        stats = []
        for x in Packed(self.projector(h.data), h.lengths).split():
            x = x[None]  # (1, T, C): each clip's TDNN stack sees only its own frames
            for layer in self.tdnn:
                x = layer(x)
            stats.append(torch.cat([x[0].mean(dim=0), x[0].std(dim=0)]))
        return self.feature_extractor(torch.stack(stats))


class Wav2Vec2ForEmbedding(Head):
    """A bare Wav2Vec2Model served for embeddings: the mean of each clip's last hidden state."""

    def forward(self, waveforms: Sequence[Waveform]) -> Tensor:
        return torch.stack([x.mean(dim=0) for x in self.hidden(waveforms).split()])


# By head suffix (family.TASKS): HubertForCTC and Wav2Vec2ForCTC are both Wav2Vec2ForCTC.
HEADS: dict[str, type[Head]] = {
    "ForCTC": Wav2Vec2ForCTC,
    "ForSequenceClassification": Wav2Vec2ForSequenceClassification,
    "ForAudioFrameClassification": Wav2Vec2ForAudioFrameClassification,
    "ForXVector": Wav2Vec2ForXVector,
    "Model": Wav2Vec2ForEmbedding,
}


def build(config: Wav2Vec2Config) -> Head:
    return HEADS[config.head](config)
