"""`python -m launch.slurm`: up, down, status and exec of the local one-node Slurm (launch.slurm)."""
from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys

from bench.config.parse import OneLineParser, parse_value, split_command
from bench.config.schema import Opt
from bench.errors import BenchInputError, input_error
from launch import slurm as _slurm
from launch.slurm import (
    DEFAULT_RESERVE_MB,
    STATE_DIR,
    daemons,
    down,
    export_line,
    finished_jobs,
    mem_total_mb,
    node_state,
    our_processes,
    require_up,
    slurm_env,
    up,
)


def _status() -> int:
    running = daemons()
    for name, pid in running.items():
        print(f"{name}: {'pid ' + str(pid) if pid else 'not running'}")
    state = node_state() if all(running.values()) else None
    if state is None:
        stray = our_processes()
        print("the local Slurm is not up" + (f"; leftovers: pids {', '.join(map(str, stray))} (remove with "
                                              f"`python -m launch.slurm down`)" if stray else ""))
        return 1
    print(f"node state: {state}")
    for line in finished_jobs():
        print(line)
    print(export_line())
    return 0


def main(argv: list[str] | None = None) -> int:
    argv, command = split_command(sys.argv[1:] if argv is None else argv)
    p = OneLineParser(prog="python -m launch.slurm", description=_slurm.__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="action", required=True)
    u = sub.add_parser("up", help=f"start munged, slurmctld and slurmd in {STATE_DIR} (removing leftovers first)")
    u.add_argument("--reserve-mb", default=str(DEFAULT_RESERVE_MB),
                   help=f"memory kept from the node for the OS (MiB; default {DEFAULT_RESERVE_MB})")
    sub.add_parser("down", help="cancel the jobs, stop the daemons, remove the state folder")
    sub.add_parser("status", help="the daemons and the node's state (exit 1 where it is not up)")
    sub.add_parser("exec", help="run the command after -- with SLURM_CONF set (refused where Slurm is not up)")
    try:
        args = p.parse_args(argv)
        if args.action == "up":
            reserve = parse_value("reserve_mb", Opt("int", lo=0, hi=mem_total_mb() - 1), args.reserve_mb)
            node = up(reserve)
            print(f"node {node.name}: {node.cpus} CPUs, {node.real_memory_mb} MiB, partition {_slurm.PARTITION}, idle")
            print(export_line())
            return 0
        if args.action == "down":
            down()
            return 0
        if args.action == "status":
            return _status()
        if not command:
            raise BenchInputError("no command given after --")
        require_up()
    except BenchInputError as err:
        return input_error(err)
    except RuntimeError as err:  # a daemon failed while starting (already torn down)
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    with contextlib.suppress(KeyboardInterrupt):
        try:
            return subprocess.call(command, env=slurm_env())
        except OSError as err:
            return input_error(BenchInputError(f"cannot run {command[0]!r}: {err.strerror}"))
    return 130


if __name__ == "__main__":
    sys.exit(main())
