"""Padded-cost batching: a batch costs its longest item times its size (TEI's max_batch_tokens).

Pure Python, shared by the server's batcher, the CLI and training, so "what fits in a batch" is
computed one way everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence


def padded_cost(costs: Sequence[int]) -> int:
    """Cost of a batch padded to its longest item."""
    return max(costs, default=0) * len(costs)


def fill_batches(
    costs: Sequence[int], max_cost: int, max_size: int | None = None
) -> list[list[int]]:
    """Indices into `costs` grouped in ascending cost order, each batch's padded cost within
    max_cost and its size within max_size; an item alone over max_cost is its own batch."""
    order = sorted(range(len(costs)), key=lambda i: costs[i])
    batches: list[list[int]] = []
    batch: list[int] = []
    for i in order:
        # Ascending order: the newcomer is the batch's longest item.
        full = max_size is not None and len(batch) >= max_size
        if batch and (full or costs[i] * (len(batch) + 1) > max_cost):
            batches.append(batch)
            batch = []
        batch.append(i)
    if batch:
        batches.append(batch)
    return batches
