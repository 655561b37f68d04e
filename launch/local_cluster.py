"""Start N MultiWorkerMirroredStrategy workers on this machine, each with its own TF_CONFIG.

    python -m launch.local_cluster -n 2 [--timeout 600] [--on-hosts] -- python bench/run.py resnet18 --strategy multiworker

Workers get free loopback ports; with --on-hosts, worker i runs on emulated host i (`python -m
launch.hosts up`: its network namespace and its core) and TF_CONFIG names the hosts' addresses,
so that the workers' traffic crosses the hosts' links. Their output is streamed with a `[worker i]` prefix. If any
worker fails, the others are stopped and the launcher exits non-zero naming it; past
--timeout, every worker is stopped and the launcher exits 124. Ctrl-C, SIGTERM and SIGHUP stop
every worker (SIGTERM, then SIGKILL after a grace period) before the launcher exits, with
128 + the signal's number (130, 143, 129).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

from bench.config.parse import OneLineParser, parse_value, split_command
from bench.config.schema import Opt
from bench.errors import BenchInputError, input_error
from bench.procs import exit_code, stop_groups, stop_on_signals
from launch.base import MAX_PER_CORE, MAX_TIMEOUT_S
from launch.hosts import Host, command_on, host_env, read_hosts

# shorter than the sweep's own grace (bench.procs.stop_groups), so that a sweep stopping this
# launcher leaves it time to SIGKILL workers that ignore SIGTERM (TensorFlow's do, in start-up)
GRACE_S = 5.0


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on loopback (held open together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def tf_config(ports: list[int], index: int, addresses: list[str] | None = None) -> str:
    """TF_CONFIG for worker `index` of a cluster on loopback, or on the hosts at `addresses`."""
    hosts = addresses or ["localhost"] * len(ports)
    return json.dumps({"cluster": {"worker": [f"{h}:{p}" for h, p in zip(hosts, ports)]},
                       "task": {"type": "worker", "index": index}})


def _pump(stream, prefix: str, out) -> None:
    for line in iter(stream.readline, ""):
        out.write(f"{prefix}{line}")
        out.flush()
    stream.close()


def launch(n: int, command: list[str], timeout: float | None = None, hosts: list[Host] | None = None) -> int:
    """Run `command` as n workers (worker i on hosts[i] where given); return 0 if all succeed, else
    non-zero (124 on timeout, 128 + N on signal N)."""
    with stop_on_signals():
        return _launch(n, command, timeout, hosts)


def _launch(n: int, command: list[str], timeout: float | None, hosts: list[Host] | None = None) -> int:
    ports = free_ports(n)
    procs: list[subprocess.Popen] = []
    pumps = []
    code = 0
    addresses = [h.address for h in hosts] if hosts else None
    try:
        for i in range(n):
            env = {**(host_env(hosts[i]) if hosts else os.environ), "TF_CONFIG": tf_config(ports, i, addresses),
                   "PYTHONUNBUFFERED": "1"}
            p = subprocess.Popen(command_on(hosts[i], command) if hosts else command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, bufsize=1, start_new_session=True)
            procs.append(p)
            t = threading.Thread(target=_pump, args=(p.stdout, f"[worker {i}] ", sys.stdout), daemon=True)
            t.start()
            pumps.append(t)
        start = time.monotonic()
        while True:
            codes = [p.poll() for p in procs]
            failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                for i, c in failed:
                    print(f"local_cluster: worker {i} failed with exit code {c}; stopping the others",
                          file=sys.stderr, flush=True)
                code = failed[0][1] if failed[0][1] > 0 else 1
                break
            if all(c == 0 for c in codes):
                break
            if timeout and time.monotonic() - start > timeout:
                running = [i for i, c in enumerate(codes) if c is None]
                print(f"local_cluster: timeout after {timeout:g} s; workers {running} still running; "
                      f"stopping them", file=sys.stderr, flush=True)
                code = 124
                break
            time.sleep(0.2)
    except KeyboardInterrupt as stop:  # Ctrl-C, SIGTERM or SIGHUP (bench.procs.Stopped)
        code = exit_code(stop)
    finally:
        stop_groups(procs, GRACE_S)
        for t in pumps:
            t.join(5)
    return code


def main(argv: list[str] | None = None) -> int:
    """Bad input: one line, exit 2."""
    own, command = split_command(sys.argv[1:] if argv is None else argv)
    p = OneLineParser(prog="python -m launch.local_cluster", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", "--num-workers", required=True)
    p.add_argument("--timeout", default=None, help="seconds before every worker is stopped")
    p.add_argument("--on-hosts", action="store_true", help="worker i on emulated host i (python -m launch.hosts up)")
    cores = os.cpu_count() or 1
    try:
        args = p.parse_args(own)
        n = parse_value("num_workers", Opt("int", lo=1, hi=MAX_PER_CORE * cores), args.num_workers)
        timeout = None if args.timeout is None else parse_value(
            "timeout", Opt("float", lo=0.0, hi=MAX_TIMEOUT_S, lo_open=True), args.timeout)
        if not command:
            raise BenchInputError("no command given after --")
        if shutil.which(command[0]) is None:  # else every worker fails to start, with a traceback
            raise BenchInputError(f"no such command (or not executable): {command[0]}")
        hosts = read_hosts() if args.on_hosts else None
        if args.on_hosts and len(hosts) < n:
            raise BenchInputError(f"--on-hosts puts one worker on each emulated host, and {len(hosts)} are up; start "
                                  f"{n} with `python -m launch.hosts up -n {n}`. Received: num_workers={n}")
    except BenchInputError as e:
        return input_error(e)
    try:
        return launch(n, command, timeout, hosts)
    except OSError as e:  # found yet not startable (a text file with an x bit): no worker started
        return input_error(BenchInputError(f"cannot start {command[0]}: {e.strerror or e}"))


if __name__ == "__main__":
    sys.exit(main())
