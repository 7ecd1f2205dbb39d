"""``ctk``: the command line. Heavy modules load lazily so ``ctk --help`` starts fast."""

from __future__ import annotations

import re
import sys

__all__ = ["main", "normalize_argv"]

_CONSUL_FLAG = re.compile(r"^-[A-Za-z][A-Za-z0-9_-]+(=.*)?$")


def normalize_argv(argv: list[str]) -> list[str]:
    """Accept Consul's single-dash long flags (``-node=n1``, ``-http-addr x``) as ``--node=n1``.

    Single letters (``-h``) and negative numbers (``-1``) are left alone, and so is everything after ``--``.
    """
    out: list[str] = []
    passthrough = False
    for arg in argv:
        if passthrough or arg == "--":
            passthrough = True
            out.append(arg)
        elif _CONSUL_FLAG.match(arg):
            out.append("-" + arg)
        else:
            out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "agent":
        # The agent parses its own flags (argparse knows -flag and --flag alike); skip typer entirely.
        from agent.server import run

        code = run(args[1:])
        if argv is None:
            sys.exit(code)
        return code
    from toolkit.cli.app import run_app

    code = run_app(normalize_argv(args))
    if argv is None:
        sys.exit(code)
    return code


if __name__ == "__main__":
    main()
