#!/usr/bin/env python3
"""Syntax check for an ``ipvsadm-restore`` rules file, without touching the kernel's IPVS table.

``ipvsadm -R`` has no dry-run mode and needs IPVS in the kernel, so ctk's ``check`` for the
ipvsadm template is this script:

    ipvsadm-check.py FILE        exit 0 if FILE is valid, 1 with "FILE:LINE: problem" lines if not

It accepts what ``ipvsadm -S`` writes and what people put in rules files: ``-A/-E/-D`` (virtual
services: ``-t|-u host:port`` or ``-f fwmark``, ``-s scheduler``, ``-p [timeout]``, ``-M
netmask``, ``-b flags``, ``--pe name``), ``-a/-e/-d`` (real servers: ``-r host[:port]``, one of
``-g|-i|-m``, ``-w weight``, ``-x``/``-y`` thresholds), ``-C``, blank lines and ``#`` comments
(ipvsadm ignores everything after ``#``). Beyond syntax it refuses what would fail half-way
through a restore: a real server for a service not defined earlier in the file, a service or
real server defined twice, a weight out of 0..65535, an invalid address or port.
Standard library only.
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Iterator

SCHEDULERS = {"rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos"}
LONG = {
    "--add-service": "-A", "--edit-service": "-E", "--delete-service": "-D", "--clear": "-C",
    "--add-server": "-a", "--edit-server": "-e", "--delete-server": "-d",
    "--tcp-service": "-t", "--udp-service": "-u", "--sctp-service": "--sctp-service", "--fwmark-service": "-f",
    "--scheduler": "-s", "--persistent": "-p", "--netmask": "-M", "--sched-flags": "-b",
    "--real-server": "-r", "--gatewaying": "-g", "--ipip": "-i", "--masquerading": "-m",
    "--weight": "-w", "--u-threshold": "-x", "--l-threshold": "-y",
}
SERVICE_CMDS = {"-A", "-E", "-D"}
SERVER_CMDS = {"-a", "-e", "-d"}


class RuleError(Exception):
    pass


def parse_host_port(text: str, what: str, port_required: bool) -> tuple[str, int | None]:
    """``1.2.3.4:80`` / ``[2001:db8::1]:80`` / ``1.2.3.4`` → (address, port)."""
    host, port_s = text, None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise RuleError(f"{what}: unbalanced '[' in {text!r}")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise RuleError(f"{what}: expected ':port' after ']' in {text!r}")
            port_s = rest[1:]
    elif text.count(":") == 1:
        host, port_s = text.split(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise RuleError(f"{what}: {host!r} is not an IP address") from None
    if port_s is None:
        if port_required:
            raise RuleError(f"{what}: {text!r} needs a port (address:port)")
        return host, None
    if not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise RuleError(f"{what}: invalid port {port_s!r} in {text!r}")
    return host, int(port_s)


def number(text: str | None, what: str, lo: int, hi: int) -> int:
    if text is None or not text.isdigit() or not lo <= int(text) <= hi:
        raise RuleError(f"{what}: want a number in {lo}..{hi}, got {text!r}")
    return int(text)


def tokens(args: list[str]) -> Iterator[str]:
    """Normalise ``--long`` options and ``-sNAME``-style joined short options."""
    for a in args:
        if a.startswith("--"):
            name, eq, value = a.partition("=")
            if name not in LONG:
                raise RuleError(f"unknown option {name!r}")
            yield LONG[name]
            if eq:
                yield value
        elif a.startswith("-") and len(a) > 2 and a[1] in "tufsprwxyMb":
            yield a[:2]
            yield a[2:]
        else:
            yield a


def check_line(args: list[str], services: set[str], servers: set[tuple[str, str]]) -> None:
    toks = list(tokens(args))
    cmd = toks[0]
    if cmd == "-C":
        if len(toks) > 1:
            raise RuleError("-C takes no arguments")
        services.clear()
        servers.clear()
        return
    if cmd not in SERVICE_CMDS | SERVER_CMDS:
        raise RuleError(f"a rule starts with -A, -E, -D, -a, -e, -d or -C, not {cmd!r}")
    service: str | None = None
    opts: dict[str, str | None] = {}
    forward = []
    i = 1
    while i < len(toks):
        opt = toks[i]
        takes_value = opt in {"-t", "-u", "-f", "-s", "-M", "-b", "-r", "-w", "-x", "-y", "--pe", "--sctp-service"}
        value = None
        if takes_value:
            if i + 1 >= len(toks):
                raise RuleError(f"{opt} needs a value")
            value = toks[i + 1]
            i += 2
        elif opt == "-p":  # optional timeout
            if i + 1 < len(toks) and toks[i + 1].isdigit():
                value = toks[i + 1]
                i += 2
            else:
                i += 1
        elif opt in {"-g", "-i", "-m"}:
            forward.append(opt)
            i += 1
            continue
        else:
            raise RuleError(f"unknown option {opt!r}")
        if opt in opts:
            raise RuleError(f"{opt} given twice")
        opts[opt] = value
        if opt in {"-t", "-u", "--sctp-service"}:
            if service is not None:
                raise RuleError("more than one service (-t/-u/-f)")
            assert value is not None
            host, port = parse_host_port(value, opt, port_required=True)
            service = f"{opt} {ipaddress.ip_address(host)}:{port}"
        elif opt == "-f":
            if service is not None:
                raise RuleError("more than one service (-t/-u/-f)")
            service = f"-f {number(value, '-f fwmark', 1, 2**32 - 1)}"
    if service is None:
        raise RuleError(f"{cmd} needs a virtual service (-t host:port, -u host:port or -f fwmark)")
    if cmd in SERVICE_CMDS:
        for bad in ("-r", "-w", "-x", "-y"):
            if bad in opts:
                raise RuleError(f"{bad} belongs to a real server rule (-a/-e), not {cmd}")
        if forward:
            raise RuleError(f"{forward[0]} belongs to a real server rule (-a/-e), not {cmd}")
        if "-s" in opts and opts["-s"] not in SCHEDULERS:
            raise RuleError(f"-s: unknown scheduler {opts['-s']!r} (want one of {', '.join(sorted(SCHEDULERS))})")
        if opts.get("-p") is not None:
            number(opts["-p"], "-p timeout", 1, 2**31 - 1)
        if cmd == "-A":
            if service in services:
                raise RuleError(f"service {service} is added twice")
            services.add(service)
        elif service not in services:
            raise RuleError(f"{cmd}: service {service} is not defined above")
        if cmd == "-D":
            services.discard(service)
        return
    for bad in ("-s", "-p", "-M", "-b", "--pe"):
        if bad in opts:
            raise RuleError(f"{bad} belongs to a service rule (-A/-E), not {cmd}")
    if service not in services:
        raise RuleError(f"{cmd}: service {service} is not defined above (add it with -A first)")
    if opts.get("-r") is None:
        raise RuleError(f"{cmd} needs a real server (-r host[:port])")
    host, port = parse_host_port(str(opts["-r"]), "-r", port_required=False)
    real = f"{ipaddress.ip_address(host)}:{port or ''}"
    if len(forward) > 1:
        raise RuleError(f"choose one forwarding method, not {' '.join(forward)}")
    if "-w" in opts:
        number(opts["-w"], "-w weight", 0, 65535)
    for t in ("-x", "-y"):
        if t in opts:
            number(opts[t], f"{t} threshold", 0, 2**31 - 1)
    key = (service, real)
    if cmd == "-a":
        if key in servers:
            raise RuleError(f"real server {real} is added twice to {service}")
        servers.add(key)
    elif key not in servers:
        raise RuleError(f"{cmd}: real server {real} is not defined above for {service}")


def check_text(text: str, name: str = "-") -> list[str]:
    """Every problem as ``name:line: message``; empty if the rules are valid."""
    problems = []
    services: set[str] = set()
    servers: set[tuple[str, str]] = set()
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            check_line(line.split(), services, servers)
        except RuleError as e:
            problems.append(f"{name}:{lineno}: {e}")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] in ("-h", "--help"):
        sys.stderr.write("usage: ipvsadm-check.py RULES_FILE\n")
        return 2
    try:
        with open(argv[1], encoding="utf-8") as fh:
            text = fh.read()
    except OSError as e:
        sys.stderr.write(f"{argv[1]}: {e.strerror}\n")
        return 1
    problems = check_text(text, argv[1])
    for p in problems:
        sys.stderr.write(p + "\n")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
