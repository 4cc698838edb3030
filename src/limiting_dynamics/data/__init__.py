"""Data sets: the torch-free catalog the config reads (:mod:`.catalog`), image
operations (:mod:`.images`), batch sources (:mod:`.batches` in memory,
:mod:`.streaming` decoded from files by DataLoader workers) and preparing and
loading a data set (:mod:`.datasets`). Imports run one way:
images <- batches <- streaming <- datasets; this package imports nothing."""
