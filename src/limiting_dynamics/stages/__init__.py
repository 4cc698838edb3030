"""The body of each CLI stage, beside the science it runs: one module per group
(:mod:`.training`, :mod:`.trajectory`, :mod:`.hessian`, ...). ``cli.py`` holds
the command table and dispatches to ``stages.<module>.<function>``."""
