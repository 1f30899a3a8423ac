"""The sweep's driver: what runs in the process that owns the study.

- ``sweep``: ``run_sweep`` and its options; a sweep's start-up (preflight checks, start
  the workers, open the study) and its run.
- ``searcher``: the Ray Tune searcher over Optuna's ask/tell, with the database as its
  state; ``population``: its K-trials-per-Ray-trial form.
- ``moasha``: multi-objective successive halving at stage-aware rungs.
- ``coordinator``: the Ray actor population workers ask for refills and rung decisions.
- ``planned``: runs known in advance (a confirmation's, a fidelity check's) handed to
  Tune.
- ``launch``: starting Ray, the resource check, the signal stop and the one Tune launcher.
- ``progress``: the lines a driver prints and the summary it ends with.

Workers are asked and answered through ``search.contract`` only.
"""

__all__ = ["coordinator", "launch", "moasha", "planned", "population", "progress", "searcher",
           "sweep"]
