"""The generated results page: formatting of the spread between seeds."""

import numpy as np

from limiting_dynamics import results_tables


def test_spread_formatting():
    assert results_tables._spread([1.0, 2.0, 3.0]) == "2.00 ± 1.00 [1.00, 3.00]"
    assert results_tables._spread([0.5]) == "0.50"
    assert results_tables._spread([np.nan]) == "-"
