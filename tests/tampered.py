"""A pickle that runs code when loaded: what a tampered checkpoint would do."""

from __future__ import annotations

from pathlib import Path


class RunsCode:
    """Unpickling this writes ``marker``: proof that loading ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))
