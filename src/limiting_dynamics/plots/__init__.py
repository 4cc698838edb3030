"""Figures, each a function of result files only (torch-free): :mod:`.style`
(theme, grids, saving with provenance), :mod:`.runs` (the limiting runs),
:mod:`.comparison` (theory against the network), :mod:`.theory` (the linear
regression check and the theory's own figures)."""
