"""Batch sources: reshuffled epochs, i.i.d. draws with replacement, and counter-based
batches that depend on the seed and the step only."""

from __future__ import annotations

import numpy as np
import torch

from limiting_dynamics.data.batches import BatchSampler, CounterSampler


def test_counter_sampler_batches_depend_on_seed_and_step_only():
    s = CounterSampler(10, 3, "reshuffle", seed=4)
    epoch = np.concatenate([s.indices(k) for k in range(3)])  # floor(10/3) = 3 batches per epoch
    assert len(set(epoch.tolist())) == 9
    again = CounterSampler(10, 3, "reshuffle", seed=4)
    assert np.array_equal(again.indices(4), s.indices(4)) and not np.array_equal(s.indices(3)[:3], epoch[:3])
    r = CounterSampler(10, 5, "replacement", seed=4)
    assert np.array_equal(r.indices(7), CounterSampler(10, 5, "replacement", seed=4).indices(7))


def test_reshuffle_visits_every_example_once_per_epoch():
    s = BatchSampler(100, 10, "reshuffle", seed=0, device=torch.device("cpu"))
    first = torch.cat([s.next() for _ in range(10)])
    assert sorted(first.tolist()) == list(range(100))
    s2 = BatchSampler(100, 10, "reshuffle", seed=0, device=torch.device("cpu"))
    assert torch.equal(torch.cat([s2.next() for _ in range(10)]), first)


def test_replacement_draws_are_iid_uniform():
    s = BatchSampler(50, 25, "replacement", seed=0, device=torch.device("cpu"))
    idx = torch.cat([s.next() for _ in range(400)])
    counts = torch.bincount(idx, minlength=50).double()
    assert counts.min() > 0
    # chi-square with 49 dof: far below 100 unless the draws are not uniform
    chi2 = float(((counts - counts.mean()) ** 2 / counts.mean()).sum())
    assert chi2 < 100
    # with replacement, a batch can repeat an example (it does, with 25 of 50)
    assert any(len(set(s.next().tolist())) < 25 for _ in range(20))
