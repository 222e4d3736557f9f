"""`python -m pump_keras <command> ...` and the `pump-keras` console script: one name for every command.

Each command is also its own module (`python -m pump_keras.train ...`) with
the same flags; this dispatcher only chooses the module and hands it the
rest of the command line.
"""

from __future__ import annotations

import importlib
import sys
from typing import Optional, Sequence

# command -> (module in pump_keras.cli, one line of help)
COMMANDS = {
    "train": ("train", "train (or resume) a run, evaluate it, export it"),
    "evaluate": ("evaluate", "the evaluation report of a run: metrics with intervals, baselines, figures"),
    "export": ("export", "a versioned SavedModel that TF Serving serves from WAV bytes"),
    "predict": ("predict", "score WAV files with an exported model or a run's .keras file"),
    "ablate": ("ablate", "the paper's ablation tables (or any grid of settings), several seeds"),
    "demo": ("demo", "a data-only demo: the features of normal and abnormal clips"),
    "serving-client": ("serving_client", "score WAV files through a running TF Serving"),
    "synthetic": ("synthetic", "write synthetic pump recordings in the MIMII layout"),
    "resample": ("resample", "resample a folder of recordings to the feature sample rate"),
}


def usage() -> str:
    """The dispatcher's help text: every command with its line."""
    width = max(map(len, COMMANDS))
    lines = ["usage: pump-keras <command> [options]   (or: python -m pump_keras <command> ...)", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "pump-keras <command> --help shows the command's options."]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs `<command>` with the remaining arguments; returns its exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0 if args else 2
    name = args[0].replace("_", "-")
    if name not in COMMANDS:
        print(f"error: unknown command {args[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"pump_keras.cli.{COMMANDS[name][0]}")
    return module.main(args[1:])


if __name__ == "__main__":
    sys.exit(main())
