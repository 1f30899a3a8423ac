"""The ``stagetune`` command: ``stagetune train|sweep|status|analyze ...``.

Bare trainer flags (``stagetune --epochs 5``) still reach the trainer, as before the
subcommands existed. A mistyped command is refused with the nearest command's name.
"""

from __future__ import annotations

import difflib
import sys

#: command -> one line of help
COMMANDS = {
    "train": "one staged training run (flags as the method's scripts know them)",
    "sweep": "run or continue a hyperparameter sweep (Ray Tune + Optuna)",
    "status": "trial counts and the Pareto front (or best trial) of a study",
    "confirm": "re-run the front and the default on fresh paired seeds; compare",
    "fidelity": "does a cheaper budget rank settings like the study's own? (rho, regret)",
    "analyze": "rank, plot, report, importance, compare (read only); dashboard",
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [
        "usage: stagetune {train,sweep,status,confirm,fidelity,analyze} ...",
        "",
        "Hyperparameter search for staged training of a four-latent (zy, za, zay, zx) VAE.",
        "",
        "commands:",
        *(f"  {name:<{width}}  {text}" for name, text in COMMANDS.items()),
        "",
        "Run 'stagetune COMMAND --help' for a command's options and defaults.",
        "'stagetune --epochs 5 ...' (trainer flags without a command) means "
        "'stagetune train --epochs 5 ...'.",
    ]
    return "\n".join(lines)


def suggest(command: str) -> str | None:
    """The command a mistyped word most likely meant, if any is close."""
    match = difflib.get_close_matches(command, list(COMMANDS), n=1, cutoff=0.6)
    return match[0] if match else None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = argv[0] if argv else ""
    if command in ("", "-h", "--help", "help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if command == "sweep":
        from search.cli import main as search_main

        return search_main(["run", *argv[1:]])
    if command in ("status", "confirm", "fidelity"):
        from search.cli import main as search_main

        return search_main([command, *argv[1:]])
    if command == "analyze":
        from analysis.cli import main as analysis_main

        return analysis_main(argv[1:])
    if command == "train" or command.startswith("-"):
        from trainer.cli import main as train_main

        return train_main(argv[1:] if command == "train" else argv)
    hint = suggest(command)
    print(f"stagetune: error: unknown command {command!r}"
          + (f"; did you mean {hint!r}?" if hint else
             f"; choose one of {', '.join(COMMANDS)}"), file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
