"""The `keystone` command.

Each area of the stack adds its subcommands from its own module in this package (`keystone_vla.cli.sim`,
`.data`, `.train`, ...): a module defines ``register(subparsers)`` and sets ``func`` on its parsers. The CLI is
the only place that imports every area, and it imports them lazily so `keystone --help` stays fast.

Conventions (shared/DESIGN.md): human-readable progress and summaries go to stderr; with ``--json`` the last
line of stdout is one JSON object; exit code 0 means the command did its job, 2 means bad input.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from keystone_vla import __version__
from keystone_vla.errors import KeystoneError

# (subcommand area, module, one-line help). A module that is not installed is left out of --help.
AREAS: tuple[tuple[str, str], ...] = (
    ("sim", "keystone_vla.cli.sim"),
    ("data", "keystone_vla.cli.data"),
    ("train", "keystone_vla.cli.train"),
    ("eval", "keystone_vla.cli.evaluate"),
    ("demo", "keystone_vla.cli.demo"),
    ("listen", "keystone_vla.cli.listen"),
    ("ros", "keystone_vla.cli.ros"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keystone",
        description="Keystone VLA: simulate, collect data, train, evaluate and run language-driven arm policies safely.",
    )
    parser.add_argument("--version", action="version", version=f"keystone-vla {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for _area, module_name in AREAS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except KeystoneError as exc:
        print(f"keystone: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("keystone: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
