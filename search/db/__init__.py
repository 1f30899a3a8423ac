"""The study database: where a study lives, and the study layer over it.

- ``storage``: the SQL engine (SQLite by default, PostgreSQL for cluster sweeps), the
  project's own tables (epoch rows, artifacts, confirmations, fidelity checks, drivers'
  heartbeats), the study lock and URLs with their passwords hidden.
- ``study``: opening, checking and resuming an Optuna study in it (samplers, orphans
  left by a stopped driver, counts toward ``--n-trials``).
- ``fixed``: the fields every trial of a study shares, stored with it (plain Python:
  ``analysis`` reads it too).

It knows nothing of Ray, the driver or the workers (an import-linter contract).
"""

__all__ = ["fixed", "storage", "study"]
