"""What a round records about itself: the recipe and the data, as lines of the model card."""

from __future__ import annotations

import argparse

from service.wav2vec2.config import Wav2Vec2Config
from training.corpus import Split
from training.data import HELDOUT_VARIANTS, VOICES, seen_variants
from training.sentences import FREQUENCY_EXPONENT
from training.text import VOCAB


def recipe(config: Wav2Vec2Config, args: argparse.Namespace, params: int) -> list[str]:
    return [
        f"- Model: Wav2Vec2ForCTC, {params / 1e6:.2f} M parameters; conv front end "
        f"{list(config.conv_dim)} (kernels {list(config.conv_kernel)}, strides "
        f"{list(config.conv_stride)}, bias, layer norm), pre-LN transformer "
        f"{config.num_hidden_layers} x {config.hidden_size} ({config.num_attention_heads} heads, "
        f"FFN {config.intermediate_size}), positional conv {config.num_conv_pos_embeddings}/"
        f"{config.num_conv_pos_embedding_groups}; no dropout, no masking.",
        f"- Vocabulary: {len(VOCAB)} tokens, `<pad>` = 0 is the CTC blank, `|` separates words; "
        "upper-case A-Z and apostrophe.",
        "- Loss: torch.nn.functional.ctc_loss, summed and divided by the target characters.",
        f"- AdamW (0.9, 0.98), weight decay {args.weight_decay} (not on biases and norms), "
        f"gradient clip {args.clip}; linear warmup, then cosine to {args.final_lr:g} over the "
        "round's wall-clock budget. Round 1: warmup "
        "100 steps to 2e-3; warm-started rounds: a short warmup to a lower peak.",
        f"- Batches grouped by length, at most {args.batch_seconds:g} s of padded audio; round 1 "
        "starts on short clips only (curriculum), the cap on clip length rising to none over "
        "its first steps."
        + (
            f" From round 5, {args.long_fraction:.0%} of steps train on one joined recording of "
            f"{args.long_seconds[0]:g}-{args.long_seconds[1]:g} s instead: random utterances' "
            "speech joined by 0.3-1.5 s pauses (long audio)."
            if getattr(args, "long_fraction", 0)
            else ""
        ),
        "- Forward in bf16 autocast where the CPU runs bf16 clearly faster (measured at the "
        "start of each round), fp32 weights and optimizer; evaluation in fp32.",
        "- Evaluated and exported: an exponential moving average of the weights (decay "
        f"{args.ema:g}, from round 2 on), so a checkpoint taken mid-round is not one noisy step.",
        "- Best checkpoint by mean held-out CER (periodic greedy evaluation), exported in fp16.",
    ]


def data_description(train: Split) -> list[str]:
    return [
        f"- {len(train):,} training utterances ({train.hours():.1f} h) synthesized by espeak-ng: "
        "70% random sequences of the 5,000 most frequent English words (`wordfreq`, a-z and "
        "apostrophe, abbreviations dropped), 30% from natural templates.",
        f"- Voices: {len(VOICES)} espeak-ng English voices x {len(seen_variants())} variants "
        f"(`+variant`, and none); {len(HELDOUT_VARIANTS)} more variants held out "
        f"({', '.join(HELDOUT_VARIANTS)}); 120-230 wpm, pitch 20-80.",
        "- 16 kHz (soxr), 0-0.5 s of silence at each end, peak gain 0.3-1.0, Gaussian noise at "
        "20-45 dB SNR on 60% of utterances. Seeded: `python -m training.data` rebuilds it.",
        *(
            [
                f"- A 0.3-1.5 s pause between two words in {train.paused / len(train):.0%} of the "
                "training utterances (corpus version 2; rounds 1-3 had none)."
            ]
            if train.paused
            else []
        ),
        *(
            [
                f"- {train.frequent:,} of the random sequences (frequent-word shards, from round "
                "10) draw their words by English frequency to the power "
                f"{FREQUENCY_EXPONENT:g} instead of uniformly, so common words (OR, WHEN, DOES) "
                "are heard far more often than rare ones."
            ]
            if train.frequent
            else []
        ),
        *(
            [
                f"- {train.connected:,} sequences (connected shards, from round 12) alternate "
                "chunks of function words (ME TO, WHEN THE, DOES IT, ...) with 1-2 "
                "frequency-drawn words, so function words are heard beside each other in "
                "connected speech; no three words in a row of a held-out template."
            ]
            if train.connected
            else []
        ),
        "- Held-out sets of 200 utterances each: natural (sentence templates never trained on, "
        "seen voices), random (random word sequences, seen voices), voices (variants never "
        "trained on).",
    ]
