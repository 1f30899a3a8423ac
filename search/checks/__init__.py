"""Checks of a study's answer: does its front beat the default on fresh seeds
(``confirm``, summarised without Ray by ``confirm_summary`` with ``paired``'s
statistics), does a cheap budget rank settings like the full one (``fidelity`` plans and
scores, ``fidelity_run`` trains), and does an objective separate the settings at all
(``resolution``)."""

__all__ = ["confirm", "confirm_summary", "fidelity", "fidelity_run", "paired", "resolution"]
