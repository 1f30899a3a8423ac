"""The ``stagetune`` command: ``stagetune [train] FLAGS``, ``stagetune sweep ...``,
``stagetune status ...`` and ``stagetune analyze ...``."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = argv[0] if argv else ""
    if command == "sweep":
        from search.cli import main as search_main

        return search_main(["run", *argv[1:]])
    if command == "status":
        from search.cli import main as search_main

        return search_main(["status", *argv[1:]])
    if command == "analyze":
        from analysis.cli import main as analysis_main

        return analysis_main(argv[1:])
    from trainer.cli import main as train_main

    return train_main(argv[1:] if command == "train" else argv)


if __name__ == "__main__":
    raise SystemExit(main())
