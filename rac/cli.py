"""The ``rac`` command line: ``build-index``, ``generate``, ``predict``, ``train``, ``eval``.

Each subcommand is a ``_add_<name>(subparsers)`` that registers its options and a ``_run_<name>(args)``
that does the work; heavy imports happen inside the runner so ``rac --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys

# --- build-index ---------------------------------------------------------------------------------

# --- generate ------------------------------------------------------------------------------------

# --- predict -------------------------------------------------------------------------------------

# --- train ---------------------------------------------------------------------------------------

# --- eval ----------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rac",
        description="Retrieval-augmented zero-shot text classification (GLiClass uni-encoder + HNSW index).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, value in sorted(globals().items()):
        if name.startswith("_add_") and callable(value):
            value(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (ValueError, FileNotFoundError, KeyError) as err:
        print(f"rac {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
