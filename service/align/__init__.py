"""CTC forced alignment: a transcript's word and character frame spans on a clip's emissions.

text.py     transcript -> words of token ids (case, delimiter, WILDCARD for unknown chars)
trellis.py  the CTC state sequence, the WILD and STAR emission columns
viterbi.py  the best path in O(S sqrt(T)) memory (checkpoints, recomputation)
spans.py    path -> token and word spans, mean log-probability scores
aligner.py  align(), the entry point
"""

from service.align.aligner import align
from service.align.errors import AlignmentImpossibleError, EmptyTextError
from service.align.spans import AlignedChar, AlignedWord, Alignment

__all__ = [
    "AlignedChar",
    "AlignedWord",
    "Alignment",
    "AlignmentImpossibleError",
    "EmptyTextError",
    "align",
]
