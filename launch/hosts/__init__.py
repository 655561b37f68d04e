"""Emulated hosts: N network namespaces on one Linux bridge, each a "host" with its own address,
its own name, its own core and its link shaped to a rate, so that a multi-host job crosses a
finite link while compute does not interfere. Needs root, `ip` and `tc` (iproute2); the hosts
run an sshd each where openssh-server is installed, which horovodrun and mpirun use as on a
real cluster.

    python -m launch.hosts up -n 2 --link 1gbit     # h0, h1 at 10.213.0.1, .2; 1 Gbit/s each way
    python -m launch.hosts status                   # what is up (and leftovers of a killed run)
    python -m launch.hosts exec h0 -- horovodrun -np 2 -H h0:1,h1:1 --gloo python bench/run.py resnet18
    python -m launch.hosts down                     # always safe: removes everything named cnb-*

`up` first removes whatever an earlier run left (namespaces, links, sshds, state), so it is
idempotent; a failure or Ctrl-C during `up` tears down what it made. `--link none` leaves the
links unshaped. Each host's link is shaped in both directions (its egress, and the bridge's port
towards it) with a token bucket (`tc ... tbf`), as a full-duplex NIC of that rate. Inside a
host, the names h0..hN-1 resolve to the hosts' addresses (ip netns' /etc/netns/<ns>/hosts), and
`ssh` is a wrapper using this tool's own key and known-hosts file: nothing outside
/run/cnnbench-hosts, /etc/netns/cnb-* and the cnb-* namespaces and links is written.

A process learns which host it is on, and its link, from `where()` (its network namespace
against /run/netns); a run's row records the link (`link_gbps`) from it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from bench.errors import BenchInputError
from bench.procs import stop_pids

PREFIX = "cnb"                      # every namespace, link and folder this tool makes starts with it
BRIDGE = f"{PREFIX}-br"
SUBNET = "10.213.0"                 # /24: host i is .i+1; nothing else on this machine may use it
MAX_HOSTS = 250                     # what the /24 holds, less the addresses kept free
STATE_DIR = Path(os.environ.get("CNNBENCH_HOSTS_DIR", "/run/cnnbench-hosts"))
NETNS_ETC = Path("/etc/netns")      # `ip netns exec NS` bind-mounts /etc/netns/NS/* over /etc/*
NETNS_RUN = Path("/run/netns")
SSHD = "/usr/sbin/sshd"
# the token bucket: 1 ms of the rate, at least 16 KiB. A burst passes at the speed of memory, so a
# small bucket keeps short messages from crossing faster than the link could carry them (tbf
# splits the veths' larger GSO segments itself); measured: 95.6 Mbit/s of 100, 947 of 1000
MIN_BURST = 16 * 1024
RATE_UNITS = {"kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "tbit": 1e12}
MIN_RATE, MAX_RATE = 1e6, 400e9     # below 1 Mbit/s collectives time out before a step ends


def netns(i: int) -> str:
    return f"{PREFIX}-h{i}"


def host_name(i: int) -> str:
    return f"h{i}"


def address(i: int) -> str:
    return f"{SUBNET}.{i + 1}"


@dataclasses.dataclass(frozen=True)
class Host:
    name: str          # h0, h1, ...: what -H and TF_CONFIG name
    netns: str         # cnb-h0, ...
    address: str
    core: int          # the one core its processes are pinned to
    link_bps: float | None  # None: unshaped

    @property
    def link_gbps(self) -> float | None:
        return None if self.link_bps is None else self.link_bps / 1e9


def parse_link(text: str) -> float | None:
    """A tc rate (`100mbit`, `1gbit`, `2.5gbit`) in bit/s, or None for `none`; BenchInputError otherwise."""
    t = text.strip().lower()
    if t in ("none", "unshaped"):
        return None
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(kbit|mbit|gbit|tbit)", t)
    if not m:
        raise BenchInputError(f"--link must be a rate such as 100mbit, 1gbit or 2.5gbit (tc's units kbit, mbit, "
                              f"gbit, tbit), or none. Received: link={text!r}")
    bps = float(m.group(1)) * RATE_UNITS[m.group(2)]
    if not MIN_RATE <= bps <= MAX_RATE:
        raise BenchInputError(f"--link must be between 1mbit and 400gbit. Received: link={text!r}")
    return bps


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True)
    except FileNotFoundError:  # no iproute2: nothing of ours can exist either
        r = subprocess.CompletedProcess(cmd, 127, "", f"{cmd[0]}: not installed")
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {(r.stderr or r.stdout).strip()}")
    return r


def missing_tools() -> list[str]:
    """What `up` needs and this machine lacks (root, ip, tc, taskset)."""
    missing = [t for t in ("ip", "tc", "taskset") if shutil.which(t) is None]
    if os.geteuid() != 0:
        missing.insert(0, "root")
    return missing


# ---- state ---------------------------------------------------------------------------------------
def _state_file() -> Path:
    return STATE_DIR / "hosts.json"


def read_hosts() -> list[Host]:
    """The hosts `up` made (empty where none are up)."""
    try:
        raw = json.loads(_state_file().read_text())
        return [Host(**h) for h in raw["hosts"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def _ino(path: str | Path) -> tuple[int, int] | None:
    with contextlib.suppress(OSError):
        st = os.stat(path)
        return st.st_dev, st.st_ino
    return None


def where() -> Host | None:
    """The emulated host this process runs on (by its network namespace), or None."""
    mine = _ino("/proc/self/ns/net")
    for h in read_hosts():
        if mine is not None and _ino(NETNS_RUN / h.netns) == mine:
            return h
    return None


def leftovers() -> dict[str, list[str]]:
    """Namespaces and links named cnb-* that exist now (a killed run's, or this one's)."""
    spaces = [line.split()[0] for line in _run("ip", "netns", "list", check=False).stdout.splitlines() if line.strip()]
    links = re.findall(rf"^\d+: ({PREFIX}-[^:@\s]+)", _run("ip", "-o", "link", "show", check=False).stdout, re.M)
    return {"namespaces": sorted(s for s in spaces if s.startswith(PREFIX + "-")), "links": sorted(set(links))}


# ---- down ----------------------------------------------------------------------------------------
def down(quiet: bool = False) -> list[str]:
    """Remove every namespace, link, sshd and file this tool makes (whatever run made them);
    returns what it removed. Safe to call at any time, any number of times."""
    removed = []
    found = leftovers()
    # every process left in the hosts (sshds, what they started, a killed job's ranks)
    stop_pids([int(p) for ns in found["namespaces"]
               for p in _run("ip", "netns", "pids", ns, check=False).stdout.split() if p.isdigit()])
    # the root-side veth first: deleting a namespace removes its peer only asynchronously
    for link in found["links"]:
        if _run("ip", "link", "del", link, check=False).returncode == 0:
            removed.append(f"link {link}")
    for ns in found["namespaces"]:
        if _run("ip", "netns", "del", ns, check=False).returncode == 0:
            removed.append(f"namespace {ns}")
    for d in NETNS_ETC.glob(f"{PREFIX}-*"):
        shutil.rmtree(d, ignore_errors=True)
    if STATE_DIR.exists():
        shutil.rmtree(STATE_DIR, ignore_errors=True)
        removed.append(str(STATE_DIR))
    if removed and not quiet:
        print(f"hosts: removed {', '.join(removed)}", file=sys.stderr)
    return removed


# ---- up ------------------------------------------------------------------------------------------
def _burst(bps: float) -> int:
    return max(MIN_BURST, int(bps / 8 / 1000))  # 1 ms of the rate


def _shape(prefix: list[str], dev: str, bps: float) -> None:
    burst = _burst(bps)
    # the queue holds 50 ms at the rate beyond the burst: a switch port's buffer, not a bufferbloat
    limit = burst + int(bps / 8 * 0.05)
    _run(*prefix, "tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate", f"{int(bps)}bit",
         "burst", str(burst), "limit", str(limit))


def _ssh_setup(hosts: list[Host]) -> None:
    """One key pair and one sshd per host (its own config, in STATE_DIR), and an `ssh` wrapper on
    the hosts' PATH that uses them, so that horovodrun and mpirun reach h0..hN as on a cluster."""
    d = STATE_DIR / "ssh"
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host_key"))
    _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "id_ed25519"))
    shutil.copy(d / "id_ed25519.pub", d / "authorized_keys")
    (d / "config").write_text(
        f"Host *\n  IdentityFile {d / 'id_ed25519'}\n  IdentitiesOnly yes\n  StrictHostKeyChecking no\n"
        f"  UserKnownHostsFile {d / 'known_hosts'}\n  LogLevel ERROR\n  BatchMode yes\n  ConnectTimeout 10\n")
    bindir = STATE_DIR / "bin"
    bindir.mkdir(exist_ok=True)
    wrapper = bindir / "ssh"
    wrapper.write_text(f"#!/bin/sh\nexec /usr/bin/ssh -F {d / 'config'} \"$@\"\n")
    wrapper.chmod(0o755)
    # sshd's privilege-separation folder (the openssh-server package's own; no service made it here)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    for h in hosts:
        conf = d / f"sshd_{h.name}.conf"
        conf.write_text(
            f"ListenAddress {h.address}\nPort 22\nHostKey {d / 'host_key'}\nAuthorizedKeysFile {d / 'authorized_keys'}\n"
            f"PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            f"UsePAM no\nStrictModes no\nPidFile {d / f'sshd_{h.name}.pid'}\nMaxStartups 100\nMaxSessions 100\n"
            f"LogLevel ERROR\nSetEnv PATH={bindir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n")
        _run(*_in(h), SSHD, "-f", str(conf))


def _in(h: Host) -> list[str]:
    """The prefix that runs a command on host h: in its namespace, pinned to its core."""
    return ["ip", "netns", "exec", h.netns, "taskset", "-c", str(h.core)]


def up(n: int, link_bps: float | None, *, ssh: bool | None = None) -> list[Host]:
    """Make n hosts (after removing any leftovers); on any failure, remove what was made and raise."""
    cores = sorted(os.sched_getaffinity(0))
    if n > len(cores):
        raise BenchInputError(f"-n {n} hosts need a core each, and this process may use {len(cores)} "
                              f"(cores {','.join(map(str, cores))}). Received: n={n}")
    missing = missing_tools()
    if missing:
        raise BenchInputError(f"emulated hosts need {', '.join(missing)}: run as root with iproute2 installed "
                              f"(`bash scripts/setup.sh --cluster` installs what they need)")
    cleaned = down(quiet=True)
    if cleaned:
        print(f"hosts: removed what an earlier run left: {', '.join(cleaned)}", file=sys.stderr)
    hosts = [Host(host_name(i), netns(i), address(i), cores[i], link_bps) for i in range(n)]
    try:
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
        _run("ip", "link", "set", BRIDGE, "up")
        names = "".join(f"{h.address} {h.name}\n" for h in hosts)
        for i, h in enumerate(hosts):
            _run("ip", "netns", "add", h.netns)
            root_end = f"{h.netns}-br"
            _run("ip", "link", "add", root_end, "type", "veth", "peer", "name", "eth0", "netns", h.netns)
            _run("ip", "link", "set", root_end, "master", BRIDGE)
            _run("ip", "link", "set", root_end, "up")
            ns = ["ip", "netns", "exec", h.netns]
            # IPv4 only: each host then has one address per interface, the one TF_CONFIG and -H name
            # (no IPv6 link-local address for a tool that picks an interface's first one)
            _run(*ns, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1",
                 "net.ipv6.conf.eth0.disable_ipv6=1")
            _run(*ns, "ip", "link", "set", "lo", "up")
            _run(*ns, "ip", "addr", "add", f"{h.address}/24", "dev", "eth0")
            _run(*ns, "ip", "link", "set", "eth0", "up")
            if link_bps is not None:
                _shape(ns, "eth0", link_bps)     # what the host sends
                _shape([], root_end, link_bps)   # what it receives
            etc = NETNS_ETC / h.netns
            etc.mkdir(parents=True, exist_ok=True)
            # the machine's own name resolves to this host's address, as a node's own name does on a
            # cluster (Gloo's start-up looks it up: left unresolved, hvd.init() segfaults)
            (etc / "hosts").write_text(f"127.0.0.1 localhost\n{h.address} {socket.gethostname()}\n{names}")
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        _state_file().write_text(json.dumps({"hosts": [dataclasses.asdict(h) for h in hosts]}, indent=1))
        if ssh or (ssh is None and Path(SSHD).exists()):
            _ssh_setup(hosts)
    except BaseException:
        down(quiet=True)
        raise
    return hosts


@contextlib.contextmanager
def emulated(n: int, link: str = "none", *, ssh: bool | None = None):
    """Hosts for the duration of a `with` block, torn down on the way out, on failure too."""
    try:
        yield up(n, parse_link(link), ssh=ssh)
    finally:
        down(quiet=True)


def host_env(h: Host) -> dict[str, str]:
    """The environment a command on host h gets: our ssh first on PATH."""
    bindir = STATE_DIR / "bin"
    path = os.environ.get("PATH", "")
    return {**os.environ, "PATH": f"{bindir}:{path}" if bindir.exists() else path}


def command_on(h: Host, command: list[str]) -> list[str]:
    return [*_in(h), *command]


def find_host(name: str) -> Host:
    hosts = read_hosts()
    if not hosts:
        raise BenchInputError("no emulated hosts are up; start them with `python -m launch.hosts up -n N`")
    for h in hosts:
        if name in (h.name, h.netns, h.address):
            return h
    raise BenchInputError(f"no host {name!r}; up are {', '.join(h.name for h in hosts)}")
