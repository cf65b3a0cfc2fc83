"""service/wav2vec2/adapters.py: MMS adapters, every language resident, mixed in one batch."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from service.errors import ModelError
from service.wav2vec2.loading import load_model
from tests.checkpoints import speech_like
from tests.mms_checkpoints import LANGUAGES, make_mms_checkpoint

# (language, seconds) per clip: three languages interleaved, lengths all different.
MIXED = [("fra", 0.9), ("eng", 1.3), ("deu", 0.6), ("fra", 1.1), ("eng", 0.45), ("deu", 1.7)]


@pytest.fixture(scope="module")
def mms(tmp_path_factory):
    return make_mms_checkpoint(tmp_path_factory.mktemp("mms"))


@pytest.fixture(scope="module")
def clips():
    return [speech_like(s, seed=i) for i, (_, s) in enumerate(MIXED)]


def max_rel_err(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


def reference(path, lang: str, clip: np.ndarray) -> tuple[np.ndarray, str]:
    """transformers: the checkpoint with `lang`'s adapter swapped in, this clip alone."""
    import transformers

    model = transformers.Wav2Vec2ForCTC.from_pretrained(path).eval()
    model.load_adapter(lang)
    features = transformers.Wav2Vec2FeatureExtractor.from_pretrained(path)
    tokenizer = transformers.Wav2Vec2CTCTokenizer.from_pretrained(path, target_lang=lang)
    x = features(clip, sampling_rate=16_000, return_tensors="pt").input_values
    with torch.no_grad():
        logits = model(x).logits[0].numpy()
    return logits, tokenizer.decode(logits.argmax(-1))


def test_mixed_batch_equals_alone_and_transformers(mms, clips):
    loaded = load_model(str(mms), dtype="float32", device="cpu")
    assert loaded.languages is not None
    assert loaded.languages.codes == sorted(LANGUAGES) and loaded.languages.default == "eng"
    langs = [lang for lang, _ in MIXED]
    together = loaded.forward(clips, langs)
    for clip, lang, out in zip(clips, langs, together):
        assert out.shape[1] == len(LANGUAGES[lang])
        (alone,) = loaded.forward([clip], [lang])
        np.testing.assert_array_equal(out.argmax(-1), alone.argmax(-1))
        assert max_rel_err(out, alone) <= 1e-5
        want, text = reference(mms, lang, clip)
        assert out.shape == want.shape
        assert max_rel_err(out, want) <= 1e-4, lang
        tokenizer = loaded.languages.tokenizers[lang]
        assert tokenizer.decode(out.argmax(-1).tolist()).text == text


def test_default_language_and_resident_subset(mms, clips):
    loaded = load_model(str(mms), dtype="float32", languages=["fra", "deu"])
    assert loaded.languages is not None and loaded.languages.codes == ["fra", "deu"]
    assert loaded.languages.default == "fra"  # eng (target_lang) is not resident
    (out,) = loaded.forward(clips[:1])
    assert out.shape[1] == len(LANGUAGES["fra"])
    with pytest.raises(ModelError, match=r"no adapter file for \['xyz'\]"):
        load_model(str(mms), languages=["eng", "xyz"])


def broken(mms, tmp_path, lang: str, edit) -> str:
    """A copy of the checkpoint whose `lang` adapter file went through `edit`."""
    path = tmp_path / "broken"
    shutil.copytree(mms, path)
    f = path / f"adapter.{lang}.safetensors"
    save_file(edit(load_file(f)), f)
    return str(path)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda w: {k: v for k, v in w.items() if "linear_1.bias" not in k}, "missing keys"),
        (lambda w: {**w, "lm_head.extra": torch.zeros(1)}, "unexpected keys"),
        (
            lambda w: {
                **w,
                "lm_head.weight": w["lm_head.weight"][:-1],
                "lm_head.bias": w["lm_head.bias"][:-1],
            },
            "lm_head has 17 outputs but vocab.json's 'fra' vocabulary has 18",
        ),
        (
            lambda w: {
                k: (v[:, :-1].contiguous() if "linear_1.weight" in k else v) for k, v in w.items()
            },
            "size mismatch",
        ),
    ],
)
def test_a_bad_adapter_file_fails_at_load_naming_it(mms, tmp_path, edit, message):
    path = broken(mms, tmp_path, "fra", edit)
    with pytest.raises(ModelError, match=message) as err:
        load_model(path)
    assert "adapter.fra.safetensors" in str(err.value)


def test_a_vocabulary_missing_for_an_adapter_is_an_error(mms, tmp_path):
    path = tmp_path / "novocab"
    shutil.copytree(mms, path)
    (path / "vocab.json").write_text(json.dumps({"eng": LANGUAGES["eng"]}))
    with pytest.raises(ModelError, match=r"no vocabulary for \['deu', 'fra'\]"):
        load_model(str(path))


class Hostile:
    """Unpickling this would run code: weights_only must refuse it."""

    def __reduce__(self):
        return (print, ("pwned",))


def test_a_bin_adapter_is_read_weights_only(mms, tmp_path):
    path = tmp_path / "pickle"
    shutil.copytree(mms, path)
    torch.save({"lm_head.weight": Hostile()}, path / "adapter.deu.bin")
    with pytest.raises(ModelError, match=r"cannot read adapter weights .*adapter\.deu\.bin"):
        load_model(str(path))


def test_a_memory_budget_loads_on_first_use_and_drops_the_least_recent(mms, clips):
    eager = load_model(str(mms), dtype="float32")
    assert eager.languages is not None
    assert list(eager.languages.resident) == sorted(LANGUAGES)  # loaded at start, by code
    one = max(eager.languages.resident.values())
    lazy = load_model(str(mms), dtype="float32", language_memory_mb=1.5 * one / 1e6)
    assert lazy.languages is not None and lazy.languages.codes == eager.languages.codes
    assert list(lazy.languages.resident) == ["eng"]  # only the default at start
    langs = [lang for lang, _ in MIXED]
    for got, want in zip(lazy.forward(clips, langs), eager.forward(clips, langs)):
        np.testing.assert_array_equal(got, want)
    # The batch needed all three: they stay until the next batch, then the budget holds.
    assert set(lazy.languages.resident) == set(LANGUAGES)
    (fra,) = lazy.forward(clips[:1], ["fra"])
    assert list(lazy.languages.resident) == ["fra"]
    np.testing.assert_array_equal(fra, eager.forward(clips[:1], ["fra"])[0])
    (deu,) = lazy.forward(clips[2:3], ["deu"])
    assert list(lazy.languages.resident) == ["deu"]
    np.testing.assert_array_equal(deu, eager.forward(clips[2:3], ["deu"])[0])


def test_with_a_budget_every_adapter_file_is_still_checked_at_load(mms, tmp_path):
    path = broken(mms, tmp_path, "fra", lambda w: {**w, "lm_head.extra": torch.zeros(1)})
    with pytest.raises(ModelError, match=r"adapter\.fra\.safetensors: .*unexpected keys"):
        load_model(path, language_memory_mb=1)
