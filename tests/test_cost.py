"""service/cost.py: padded cost and the batches formed under a padded-cost budget."""

from __future__ import annotations

import random

import pytest

from service.cost import fill_batches, fill_in_order, padded_cost


def test_padded_cost_is_longest_times_count():
    assert padded_cost([3, 7, 5]) == 21
    assert padded_cost([]) == 0


def test_batches_are_ascending_runs_under_the_budget():
    costs = [5, 1, 9, 3, 3, 7, 2, 8]
    batches = fill_batches(costs, max_cost=12)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(costs)))  # every index once
    assert [costs[i] for i in flat] == sorted(costs)  # ascending cost order
    assert flat[2:4] == [3, 4]  # ties keep index order
    assert all(padded_cost([costs[i] for i in b]) <= 12 for b in batches)
    # greedy: each batch could not have taken the next item
    for b, nxt in zip(batches, batches[1:]):
        assert padded_cost([costs[i] for i in [*b, nxt[0]]]) > 12


def test_an_item_over_the_budget_is_alone():
    assert fill_batches([4, 50, 4], max_cost=10) == [[0, 2], [1]]
    assert fill_batches([50], max_cost=10) == [[0]]
    assert fill_batches([], max_cost=10) == []


def test_max_size_caps_the_count():
    assert fill_batches([1] * 7, max_cost=100, max_size=3) == [[0, 1, 2], [3, 4, 5], [6]]


@pytest.mark.parametrize("seed", range(5))
def test_random_costs_keep_every_invariant(seed):
    rng = random.Random(seed)
    costs = [rng.randint(1, 40) for _ in range(60)]
    batches = fill_batches(costs, max_cost=100, max_size=6)
    assert sorted(i for b in batches for i in b) == list(range(60))
    for b in batches:
        assert len(b) <= 6
        assert padded_cost([costs[i] for i in b]) <= 100 or len(b) == 1


def test_in_order_keeps_the_given_order():
    costs = [5, 1, 9, 3]
    assert fill_in_order([2, 0, 1, 3], costs, max_cost=18) == [[2, 0], [1, 3]]
