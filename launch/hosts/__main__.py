"""`python -m launch.hosts`: up, down, status and exec of the emulated hosts (launch.hosts)."""
from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys

from bench.config.parse import OneLineParser, parse_value, split_command
from bench.config.schema import Opt
from bench.errors import BenchInputError, input_error
from launch import hosts as _hosts
from launch.hosts import (
    MAX_HOSTS,
    command_on,
    down,
    find_host,
    host_env,
    leftovers,
    parse_link,
    read_hosts,
    up,
)


def _status() -> int:
    hosts = read_hosts()
    for h in hosts:
        rate = "unshaped" if h.link_bps is None else f"{h.link_bps / 1e9:g} Gbit/s"
        print(f"{h.name}  {h.address}  netns {h.netns}  core {h.core}  link {rate}")
    left = leftovers()
    stray = [s for s in left["namespaces"] if s not in {h.netns for h in hosts}]
    if stray:
        print(f"leftovers: {', '.join(stray)} (remove with `python -m launch.hosts down`)")
    if not hosts and not stray:
        print("no emulated hosts are up")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv, command = split_command(sys.argv[1:] if argv is None else argv)
    p = OneLineParser(prog="python -m launch.hosts", description=_hosts.__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="action", required=True)
    u = sub.add_parser("up", help="make N hosts (removing leftovers first)")
    u.add_argument("-n", "--num-hosts", required=True)
    u.add_argument("--link", default="none", help="each host's link rate, e.g. 100mbit, 1gbit; none: unshaped")
    u.add_argument("--no-ssh", action="store_true", help="start no sshd in the hosts")
    sub.add_parser("down", help="remove every host and leftover")
    sub.add_parser("status", help="list the hosts and any leftovers")
    e = sub.add_parser("exec", help="run the command after -- on a host (its namespace, its core)")
    e.add_argument("host")
    try:
        args = p.parse_args(argv)
        if args.action == "up":
            n = parse_value("num_hosts", Opt("int", lo=1, hi=MAX_HOSTS), args.num_hosts)
            hosts = up(n, parse_link(args.link), ssh=False if args.no_ssh else None)
            for h in hosts:
                print(f"{h.name} {h.address} core {h.core}")
            return 0
        if args.action == "down":
            down()
            return 0
        if args.action == "status":
            return _status()
        h = find_host(args.host)
        if not command:
            raise BenchInputError("no command given after --")
    except BenchInputError as err:
        return input_error(err)
    except RuntimeError as err:  # a tool failed while making the hosts (already torn down)
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    with contextlib.suppress(KeyboardInterrupt):
        return subprocess.call(command_on(h, command), env=host_env(h))
    return 130


if __name__ == "__main__":
    sys.exit(main())
