"""KenLM binary language models, through the optional `kenlm` module."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from service.errors import ModelError
from service.lm.arpa import UNK


class KenlmModel:
    """The NgramModel interface over a kenlm.Model; states are KenLM's own."""

    def __init__(self, model: Any, kenlm: Any) -> None:
        self.model = model
        self.kenlm = kenlm
        self.order = int(model.order)

    def __contains__(self, word: str) -> bool:
        return word in self.model

    def begin_state(self) -> Any:
        state = self.kenlm.State()
        self.model.BeginSentenceWrite(state)
        return state

    def null_state(self) -> Any:
        state = self.kenlm.State()
        self.model.NullContextWrite(state)
        return state

    def score(self, context: Any, word: str) -> tuple[float, Any]:
        out = self.kenlm.State()
        return float(self.model.BaseScore(context, word if word in self.model else UNK, out)), out


def read_kenlm_binary(path: Path) -> KenlmModel:
    try:
        import kenlm  # type: ignore[import-not-found]
    except ImportError as exc:
        raise ModelError(
            f"{path} is a KenLM binary, which needs the `kenlm` module: pip install kenlm "
            "(it builds from source with g++ and cmake), or ship the language model as .arpa"
        ) from exc
    try:
        return KenlmModel(kenlm.Model(str(path)), kenlm)
    except (OSError, RuntimeError) as exc:
        raise ModelError(f"cannot load {path}: {exc}") from exc
