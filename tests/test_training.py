"""The demo model's training pieces: the corpus generator (training/data.py) with pauses inside
training utterances (corpus version 2) that disturb nothing else a plan draws, the version
check that redoes older shards; growing a warm start to more layers (training/weights.py);
a whole round on a tiny corpus (training/train.py), and its evaluation through the serving
forward (training/forward.py)."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import service
from service.wav2vec2.config import Wav2Vec2Config
from service.wav2vec2.heads import Wav2Vec2ForCTC
from service.wav2vec2.loading import load_model
from tests.conftest import require_tool
from training import average, data, errors, export, sentences, ship, train
from training.corpus import Batches, Split
from training.forward import transcribe
from training.sentences import RESERVED
from training.text import error_rates, greedy

DEMO = Path(service.__file__).parent / "models" / "demo-ctc"


def test_a_quarter_of_training_utterances_pause_and_held_out_sets_never_do():
    plan = data.plan_split("train-00003", 400, 0, RESERVED)
    paused = [u for u in plan if u.pause_word]
    assert 0.15 < len(paused) / len(plan) < 0.35
    for u in paused:
        assert 1 <= u.pause_word < len(u.text.split())
        assert data.PAUSE_SECONDS[0] <= u.pause_s <= data.PAUSE_SECONDS[1]
    for kind in data.HELDOUT_SETS:
        assert not any(u.pause_word for u in data.plan_split(f"heldout-{kind}", 100, 0, RESERVED))


def test_pauses_leave_the_other_draws_as_version_1_made_them(monkeypatch):
    with_pauses = data.plan_split("train-00007", 200, 0, RESERVED)
    monkeypatch.setattr(data, "PAUSE_FRACTION", 0.0)
    without = data.plan_split("train-00007", 200, 0, RESERVED)
    assert [dataclasses.replace(u, pause_word=0, pause_s=0.0) for u in with_pauses] == without


def test_frequent_shards_hear_common_words_more_and_keep_out_the_held_out_sentences():
    heldout = {
        u.text for k in data.HELDOUT_SETS for u in data.plan_split(f"heldout-{k}", 200, 0, RESERVED)
    }
    uniform = data.plan_split("train-00002", 600, 0, RESERVED | heldout)
    frequent = data.plan_split(f"{data.FREQUENT_PREFIX}00002", 600, 0, RESERVED | heldout)
    assert not {u.text for u in frequent} & (heldout | RESERVED)
    assert {u.kind for u in uniform} == {"random", "natural"}
    assert {u.kind for u in frequent} == {"frequent", "natural"}

    def count(plan, kind):
        return Counter(w for u in plan if u.kind == kind for w in u.text.split())

    ours, theirs = count(frequent, "frequent"), count(uniform, "random")
    words = sum(ours.values())
    # The uniform draw hears THE and TREATY alike; the frequent one THE far more often, and
    # still a good part of the list's tail.
    assert ours["the"] > 20 * max(1, theirs["the"]) and ours["the"] < 0.1 * words
    assert len(ours) > 1000
    # Like every split, planned from its name, size and seed alone (rebuilt the same anywhere).
    same = data.plan_split(f"{data.FREQUENT_PREFIX}00002", 600, 0, RESERVED | heldout)
    assert same == frequent


def test_connected_shards_put_function_words_side_by_side_but_never_a_held_out_shape():
    heldout = {
        u.text for k in data.HELDOUT_SETS for u in data.plan_split(f"heldout-{k}", 200, 0, RESERVED)
    }
    frequent = data.plan_split(f"{data.FREQUENT_PREFIX}00003", 600, 0, RESERVED | heldout)
    connected = data.plan_split(f"{data.CONNECTED_PREFIX}00003", 600, 0, RESERVED | heldout)
    assert {u.kind for u in connected} == {"connected", "natural"}
    assert not {u.text for u in connected} & (heldout | RESERVED)

    def pairs(plan, kind):
        return Counter(
            pair
            for u in plan
            if u.kind == kind
            for pair in zip(u.text.split(), u.text.split()[1:], strict=False)
        )

    ours, theirs = pairs(connected, "connected"), pairs(frequent, "frequent")
    function = {w for words in sentences._FUNCTION.values() for w in words.split()}

    def share(counts):
        both = sum(n for (a, b), n in counts.items() if a in function and b in function)
        return both / sum(counts.values())

    # Function word beside function word: chance in the frequency draw, the rule here.
    assert share(ours) > 2 * share(theirs)
    assert ours["me", "to"] > 3 * max(1, theirs["me", "to"])
    # Content words still come from the whole list, so contexts vary.
    assert len({w for u in connected if u.kind == "connected" for w in u.text.split()}) > 800
    trigrams = sentences.heldout_trigrams()
    assert "asked me to" in trigrams and "time does the" in trigrams
    texts = [u.text for u in connected if u.kind == "connected"]
    assert not [t for t in texts for g in trigrams if g in t]
    assert data.plan_split(f"{data.CONNECTED_PREFIX}00003", 600, 0, RESERVED | heldout) == connected


def test_a_paused_utterance_holds_its_silence():
    require_tool("espeak-ng")
    u = next(u for u in data.plan_split("train-00000", 50, 0, RESERVED) if u.pause_word)
    u = dataclasses.replace(u, snr_db=None, pause_s=0.8)
    x = np.abs(data.render(u).astype(np.float32))
    quiet = x < 1e-3 * 32768
    # the longest quiet run inside the speech (outside lead and tail) is the pause
    inner = quiet[int(u.lead_s * data.SAMPLE_RATE) : len(x) - int(u.tail_s * data.SAMPLE_RATE)]
    runs = np.diff(np.flatnonzero(np.diff(np.concatenate([[0], inner, [0]]).astype(int))))[::2]
    assert runs.max() / data.SAMPLE_RATE == pytest.approx(0.8, abs=0.1)


def test_older_splits_are_redone(tmp_path):
    assert data._version(tmp_path / "missing.json") == 0
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"utterances": []}))
    new = tmp_path / "new.json"
    new.write_text(json.dumps({"version": data.CORPUS_VERSION, "utterances": []}, indent=0))
    assert data._version(old) == 1
    assert data._version(new) == data.CORPUS_VERSION


@pytest.mark.slow
def test_growing_layers_keeps_the_function_and_the_trained_layers():
    demo = DEMO
    model = Wav2Vec2ForCTC(Wav2Vec2Config.from_file(demo / "config.json"))
    train.load_weights(model, demo)
    old = model.config.num_hidden_layers
    grown = train.grow(model, old + 4)
    assert grown.config.num_hidden_layers == old + 4
    train.check_grown(model, grown)  # asserts equal outputs on random clips
    before, after = model.wav2vec2.encoder.layers, grown.wav2vec2.encoder.layers
    for i in range(old):  # trained layers spread out in order, weights as they were
        j = i * (old + 4) // old
        assert torch.equal(
            before[i].feed_forward.output_dense.weight, after[j].feed_forward.output_dense.weight
        )
    new = set(range(old + 4)) - {i * (old + 4) // old for i in range(old)}
    assert len(new) == 4
    for j in new:
        assert not after[j].attention.out_proj.weight.any()
        assert after[j].feed_forward.intermediate_dense.weight.any()  # learnable, not dead


def tiny_corpus(root: Path, n_train: int = 12, n_heldout: int = 3) -> Path:
    """Noise utterances with word labels, in the shard format training/data.py writes."""
    rng = np.random.default_rng(0)
    words = ["HELLO", "WORLD", "YES", "NO", "GO", "STOP"]
    root.mkdir(parents=True, exist_ok=True)
    for name, n in [("train-00000", n_train)] + [
        (f"heldout-{k}", n_heldout) for k in data.HELDOUT_SETS
    ]:
        audio, meta, offset = [], [], 0
        for _ in range(n):
            length = int(rng.integers(8_000, 24_000))
            audio.append((rng.standard_normal(length) * 3000).astype(np.int16))
            text = " ".join(rng.choice(words, int(rng.integers(1, 4))))
            lead, tail = 0.1 * int(rng.integers(0, 3)), 0.1 * int(rng.integers(0, 3))
            meta.append(
                {"offset": offset, "length": length, "text": text, "lead_s": lead, "tail_s": tail}
            )
            offset += length
        np.save(root / f"{name}.npy", np.concatenate(audio))
        (root / f"{name}.json").write_text(json.dumps({"version": 2, "utterances": meta}))
    return root


@pytest.mark.slow
def test_a_round_from_scratch_trains_evaluates_and_exports_then_warm_rounds_and_averages(tmp_path):
    corpus, run = tiny_corpus(tmp_path / "data"), tmp_path / "run"
    train.main(
        [
            "--from-scratch",
            "--data",
            str(corpus),
            "--run",
            str(run),
            "--max-steps",
            "3",
            "--eval-n",
            "2",
            "--final-eval-n",
            "3",
            "--dtype",
            "float32",
            "--check",
            "--threads",
            "1",
            "--batch-seconds",
            "3",
            "--curriculum-steps",
            "2",
            "--long-fraction",
            "0.5",
            "--long-seconds",
            "2",
            "4",
        ]
    )
    history = json.loads((run / "training.json").read_text())
    (entry,) = history["rounds"]
    assert entry["steps"] == 3 and entry["status"] == "finished"
    assert [p["steps"] for p in entry["curve"]] == [3]  # scratch: scored at the end only
    assert {k: v["n"] for k, v in entry["eval"].items()} == dict.fromkeys(data.HELDOUT_SETS, 3)
    assert history["fp16_check"]["n"] == 9
    exported = load_model(str(run / "export"))  # a complete model directory
    assert exported.config.num_hidden_layers == 4 and exported.tokenizer is not None

    # A warm round scores its starting point before any step: loss null, not a crash.
    warm = tmp_path / "warm"
    train.main(
        ["--init", str(run / "export"), "--data", str(corpus), "--run", str(warm)]
        + ["--max-steps", "1", "--eval-n", "2", "--final-eval-n", "2", "--dtype", "float32"]
        + ["--threads", "1", "--batch-seconds", "3"]
    )
    rounds = json.loads((warm / "training.json").read_text())["rounds"]
    assert len(rounds) == 2 and rounds[-1]["curve"][0]["loss"] is None
    # Its last weights too, best or not: a next round can go on from them.
    last = load_model(str(warm / "last"))
    assert last.config.num_hidden_layers == 4 and last.tokenizer is not None

    # The two rounds' mean: fp16 weights averaged, scored, recorded as a third round.
    soup = tmp_path / "soup"
    average.main(
        [str(run / "export"), str(warm / "export"), "--out", str(soup)]
        + ["--data", str(corpus), "--n", "2"]
    )
    a, b, mean = (
        load_file(str(d / "model.safetensors")) for d in (run / "export", warm / "export", soup)
    )
    for k in mean:
        assert torch.equal(mean[k], ((a[k].float() + b[k].float()) / 2).half())
    history = json.loads((soup / "training.json").read_text())
    entry = history["rounds"][-1]
    assert len(history["rounds"]) == 3 and entry["init"] == "average of rounds 1, 2"
    assert {k: v["n"] for k, v in entry["eval"].items()} == dict.fromkeys(data.HELDOUT_SETS, 2)
    assert "Round 3: average of rounds 1, 2" in (soup / "README.md").read_text()
    assert (soup / "config.json").read_text() == (run / "export" / "config.json").read_text()


def test_a_joined_recording_is_utterances_speech_between_pauses(tmp_path):
    split = Split.load(tiny_corpus(tmp_path), ["train-00000"])
    samples, text = split.joined(np.random.default_rng(1), seconds=4.0)
    assert len(samples) >= 4.0 * data.SAMPLE_RATE
    # Every non-silent run is one utterance's speech, in the transcript's order, without the
    # silence its renderer put either side, and the pauses between them are 0.3-1.5 s.
    loud = np.flatnonzero(samples != 0)  # the test corpus is noise: zeros inside are rare
    gaps = np.flatnonzero(np.diff(loud) > 0.2 * data.SAMPLE_RATE)
    starts, ends = [loud[0], *loud[gaps + 1]], [*loud[gaps] + 1, loud[-1] + 1]
    pieces = [samples[a:b] for a, b in zip(starts, ends)]
    speech = [split.speech(i) for i in range(len(split))]

    def source(piece: np.ndarray) -> int:  # (a run may lose a speech's edge samples that are 0)
        (i,) = [
            i
            for i, x in enumerate(speech)
            if len(x) - len(piece) < 3 and piece.tobytes() in x.tobytes()
        ]
        return i

    assert " ".join(split.texts[source(p)] for p in pieces) == text
    pauses = (np.array(starts[1:]) - np.array(ends[:-1])) / data.SAMPLE_RATE
    assert len(pieces) >= 2 and ((pauses >= 0.3) & (pauses <= 1.5)).all()
    lead = split.lead[0] / data.SAMPLE_RATE
    assert split.speech(0).size == split.length[0] - split.lead[0] - split.tail[0] and lead >= 0


def test_evaluation_transcribes_through_the_serving_forward():
    """training's greedy transcripts (length-sorted batches under a budget) equal the served
    model's, clip by clip."""
    loaded = load_model(str(DEMO), dtype="float32")
    rng = np.random.default_rng(1)
    clips = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (9_000, 4_000, 16_000)]
    alone = [greedy(torch.from_numpy(x)) for x in loaded.forward(clips)]
    assert transcribe(loaded.model, clips, budget=20_000) == alone


def test_batches_stay_under_the_budget_and_cover_an_epoch():
    lengths = np.random.default_rng(2).integers(1_000, 9_000, 200)
    batches = Batches(lengths, budget=30_000, seed=0)
    batches._new_epoch()
    epoch = list(batches.pending)
    assert sorted(int(i) for b in epoch for i in b) == list(range(200))
    assert all(lengths[b].max() * len(b) <= 30_000 for b in epoch)


def test_shards_written_during_a_round_join_it(tmp_path):
    """A round can start before `training.data` has finished: new shards join at the next
    evaluation, and the round's record says how much data it trained on."""
    corpus = tiny_corpus(tmp_path / "data")
    args = train.parse_args(
        [
            "--from-scratch",
            "--data",
            str(corpus),
            "--run",
            str(tmp_path / "run"),
            "--dtype",
            "float32",
            "--threads",
            "1",
            "--batch-seconds",
            "3",
        ]
    )
    model, history, init = train.initial_model(args)
    r = train.Round(args, None, model, history, init)
    before = len(r.train)
    r.add_new_shards()  # nothing new: unchanged
    assert len(r.train) == before
    for ext in ("npy", "json"):
        (corpus / f"train-00001.{ext}").write_bytes((corpus / f"train-00000.{ext}").read_bytes())
    r.add_new_shards()
    assert len(r.train) == 2 * before
    assert r.entry["train_utterances"] == 2 * before
    first = r.batches.next()  # a new epoch over the grown split
    covered = {int(i) for b in [first, *r.batches.pending] for i in b}
    assert covered == set(range(2 * before))


@pytest.mark.parametrize("last_scores_better", [True, False])
def test_a_round_exports_the_better_of_its_best_checkpoint_and_last_weights_on_the_whole_sets(
    tmp_path, last_scores_better
):
    """The curve's subsets chose the start; the whole held-out sets decide between it and the
    round's last weights, and RUN/last carries the last weights' own scores."""
    corpus, run = tiny_corpus(tmp_path / "data"), tmp_path / "run"
    args = train.parse_args(
        ["--from-scratch", "--data", str(corpus), "--run", str(run), "--final-eval-n", "2"]
        + ["--dtype", "float32", "--threads", "1", "--batch-seconds", "3"]
    )
    model, history, init = train.initial_model(args)
    r = train.Round(args, None, model, history, init)
    start = {k: v.clone() for k, v in r.averaged.state_dict().items()}
    with torch.no_grad():
        for p in r.averaged.parameters():
            p.add_(0.01)  # what training changed
    r.step, r.best = 7, {"cer": 0.0, "state": start, "eval": None, "step": 0}
    probe = next(iter(start))

    def score(state):
        is_last = not torch.equal(state[probe], start[probe])
        cer = 0.1 if is_last == last_scores_better else 0.2
        return {k: {"cer": cer, "wer": 0.5, "n": 2} for k in data.HELDOUT_SETS}, ["A"] * 6

    r.score = score
    r.finish()
    exported, last = (load_file(str(run / d / "model.safetensors")) for d in ("export", "last"))
    assert all(torch.equal(exported[k], last[k]) for k in last) == last_scores_better
    assert r.best["step"] == (7 if last_scores_better else 0)
    (entry,) = json.loads((run / "training.json").read_text())["rounds"]
    assert entry["status"] == "finished" and entry["eval"]["natural"]["cer"] == 0.1
    (last_entry,) = json.loads((run / "last" / "training.json").read_text())["rounds"]
    assert last_entry["status"] == "finished"
    assert last_entry["eval"]["natural"]["cer"] == (0.1 if last_scores_better else 0.2)
    card = (run / "export" / "README.md").read_text()
    assert "The weights the round chose, on the whole held-out sets (2 utterances each)" in card
    assert "natural 10.0% / 50.0%" in card


def test_exported_config_holds_only_what_transformers_wav2vec2_config_has():
    """Our config class also carries the other architectures' fields (rotary base, buckets):
    a Wav2Vec2 checkpoint's config.json must not name them."""
    transformers = pytest.importorskip("transformers")
    from service.wav2vec2.config import Wav2Vec2Config
    from training.export import hf_config

    written = hf_config(Wav2Vec2Config.from_dict(train.model_config(64).to_dict()))
    assert set(written) <= set(transformers.Wav2Vec2Config().to_dict()) | {"id2label", "label2id"}
    for name in ("demo-ctc", "demo-commands", "demo-speakers", "demo-vad"):
        shipped = json.loads(
            (Path(service.__file__).parent / "models" / name / "config.json").read_text()
        )
        assert "rotary_embedding_base" not in shipped and "num_buckets" not in shipped, name


def test_shipping_keeps_what_outlives_the_weights_and_drops_their_scores():
    shipped = json.loads((DEMO / "training.json").read_text())
    candidate = {"rounds": [*shipped["rounds"], {"round": 99}], "recipe": ["new"]}
    history = ship.merged(shipped, candidate)
    assert history["rounds"][-1] == {"round": 99} and history["recipe"] == ["new"]
    for kept in ship.KEPT:
        assert history.get(kept) == shipped.get(kept)
    assert not {"decoders", "int8_check", "bfloat16_check", "fp16_check"} & history.keys()
    replaced = shipped["rounds"][-1]["round"]
    for name, figures in shipped.get("longform", {}).items():  # moved aside, never lost
        key = name if "," in name else f"{name}, round {replaced}"
        assert history["longform"][key] == figures
    export.model_card(history)  # renders


def test_word_errors_are_told_apart_by_kind():
    vocabulary = {"ALICE", "ASKED", "ME", "TO", "VERY", "VARY", "DOES", "THE", "DOG"}
    got = errors.classify("ALICE ASKED ME TO", "ALICEASKED ME TO", vocabulary)
    assert [k for k, _, _ in got] == ["boundary", "boundary"]
    got = errors.classify("DOES THE DOG", "DOS THE DOG", vocabulary)
    assert got == [("non-word", "DOES", "DOS")]
    got = errors.classify("VERY THE DOG", "VARY DOG ME", vocabulary)
    assert got == [
        ("real word", "VERY", "VARY"),
        ("deleted", "THE", None),
        ("inserted", None, "ME"),
    ]
    assert errors.classify("THE DOG", "THE DOG", vocabulary) == []
    # every edit is one word error: the counts add up to the WER's numerator
    refs, hyps = ["ALICE ASKED ME TO", "VERY THE DOG"], ["ALICEASKED ME TO", "VARY DOG ME"]
    counts = Counter({w: 10 for w in vocabulary} | {"THE": 5_000})
    r = errors.breakdown(refs, hyps, counts)
    assert r["errors"] == 5 == round(error_rates(refs, hyps)["wer"] * r["words"])
    assert r["bands"] == {"0-199": 1, "1,000+": 1}  # VERY and THE (boundary errors aside)
    card = export.model_card(
        {"errors": {"weights": "round 9", "training_transcripts": 100, "results": {"natural": r}}}
    )
    assert "## Where the greedy word errors are" in card and "| natural | 7 | 5 |" in card
