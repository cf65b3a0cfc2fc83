"""Padded-cost batching: one helper for the batcher, the CLI and training (no torch, no numpy).

A batch is padded to its longest item, so its cost is `max(costs) * len(costs)` samples
(TEI's max_batch_tokens). Grouping items of similar cost keeps that padding small.
"""

from __future__ import annotations

from collections.abc import Sequence


def padded_cost(costs: Sequence[int]) -> int:
    """Cost of a batch padded to its longest item; 0 for no items."""
    return max(costs, default=0) * len(costs)


def fill_batches(
    costs: Sequence[int], max_cost: int, max_size: int | None = None
) -> list[list[int]]:
    """Indices of costs grouped in ascending cost order (ties in index order) so that each
    batch's padded cost stays <= max_cost and its size <= max_size; an item alone over
    max_cost forms its own batch."""
    order = sorted(range(len(costs)), key=lambda i: costs[i])
    return fill_in_order(order, costs, max_cost, max_size)


def fill_in_order(
    order: Sequence[int], costs: Sequence[int], max_cost: int, max_size: int | None = None
) -> list[list[int]]:
    """As fill_batches, but for indices in the given order: consecutive runs of `order`, a
    batch closed as soon as the next item would take it past max_cost or max_size. Training
    passes a jittered near-ascending order, so batches get new neighbours every epoch."""
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        cost = int(costs[i])
        full = max_size is not None and len(current) >= max_size
        if current and (full or max(longest, cost) * (len(current) + 1) > max_cost):
            batches.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, cost)
    if current:
        batches.append(current)
    return batches
