"""Download a Hugging Face hub checkpoint into a directory, once.

Runs as the Kubernetes init container that fills the model volume, and at image build time when a
model is baked in. Idempotent: a finished download leaves a marker with the repo id and revision;
when the marker matches, nothing is fetched, so a volume filled beforehand works without network.
A download goes to a per-host temporary directory that is renamed into place only when complete,
so a server never sees half a checkpoint, even with several pods sharing one volume.

    python fetch_model.py REPO_ID TARGET_DIR [--revision REV]
    MODEL_ID=... MODEL_DIR=... [MODEL_REVISION=...] python fetch_model.py
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
from pathlib import Path

MARKER = ".w2v-download-complete"
# Only what a PyTorch Wav2Vec2 checkpoint needs; skip TensorFlow, Flax and ONNX copies.
IGNORE_PATTERNS = ["*.h5", "*.msgpack", "*.ot", "*.onnx", "tf_model*", "flax_model*", "*.tflite"]


def fetch(repo_id: str, target: Path, revision: str) -> None:
    """Make target hold repo_id at revision (a no-op when it already does)."""
    stamp = f"{repo_id}@{revision}\n"
    marker = target / MARKER
    if marker.is_file() and marker.read_text() == stamp:
        print(f"{target}: already holds {repo_id}@{revision}")
        return

    from huggingface_hub import snapshot_download  # only needed when there is work to do

    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.parent / f".{target.name}.partial-{socket.gethostname()}"
    print(f"downloading {repo_id}@{revision} to {target}", flush=True)
    snapshot_download(
        repo_id=repo_id,
        revision=revision,
        local_dir=partial,
        ignore_patterns=IGNORE_PATTERNS,
    )
    if not (partial / "config.json").is_file():
        raise SystemExit(f"{repo_id}@{revision} has no config.json: not a transformers checkpoint")
    shutil.rmtree(partial / ".cache", ignore_errors=True)  # huggingface_hub's resume metadata
    (partial / MARKER).write_text(stamp)

    if marker.is_file() and marker.read_text() == stamp:  # another pod finished first
        shutil.rmtree(partial)
        return
    stale = target.parent / f".{target.name}.stale-{socket.gethostname()}"
    if target.exists():
        target.rename(stale)
    partial.rename(target)
    shutil.rmtree(stale, ignore_errors=True)
    print(f"{target}: ready")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repo_id", nargs="?", default=os.environ.get("MODEL_ID", ""))
    parser.add_argument("target", nargs="?", default=os.environ.get("MODEL_DIR", ""))
    parser.add_argument("--revision", default=os.environ.get("MODEL_REVISION") or "main")
    args = parser.parse_args(argv)
    if not args.repo_id:
        print("no MODEL_ID given: nothing to download (the server uses its embedded model)")
        return 0
    if not args.target:
        parser.error("TARGET_DIR (or MODEL_DIR) is required with a repo id")
    fetch(args.repo_id, Path(args.target), args.revision)
    return 0


if __name__ == "__main__":
    sys.exit(main())
