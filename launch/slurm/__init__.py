"""A one-node Slurm on this machine: its own munged, slurmctld and slurmd, configured in a state
folder this tool owns, so that `sbatch` and `srun` run cnnbench's jobs as on a cluster. Needs root
and Debian's slurmctld, slurmd, slurm-client and munge packages (`bash scripts/setup.sh --cluster`).

    python -m launch.slurm up          # munged, slurmctld, slurmd; waits until the node is idle
    export SLURM_CONF=/run/cnnbench-slurm/slurm.conf   # what `up` prints: sbatch/srun/sinfo find it
    python -m launch.slurm exec -- sbatch --wait launch/templates/slurm.sbatch
    python -m launch.slurm status      # the daemons, the node's state, and the export line
    python -m launch.slurm down        # always safe: cancels jobs, stops the daemons, removes the folder

Nothing outside the state folder (/run/cnnbench-slurm, or $CNNBENCH_SLURM_DIR) is written: the
munge key, munged's socket, slurm.conf, the spool, state and log folders all live in it, and
the daemons find them by command-line flags and SLURM_CONF, never /etc/slurm or /etc/munge. One
node named after this machine's short hostname (at 127.0.0.1: only this machine can reach it),
with every CPU and its memory less a reserve, in one partition `cpu`. `up` first removes what
an earlier (killed) run left, so it is idempotent; it tears down what it made if it fails.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from bench.errors import BenchInputError
from bench.procs import alive, stop_pids

STATE_DIR = Path(os.environ.get("CNNBENCH_SLURM_DIR", "/run/cnnbench-slurm"))
CLUSTER = "cnnbench"
PARTITION = "cpu"
CTLD_PORT, SLURMD_PORT = 6817, 6818          # Slurm's own defaults
DEFAULT_RESERVE_MB = 1024                    # memory kept from the node for the OS and the daemons
DAEMONS = ("slurmctld", "slurmd", "munged")
CLIENTS = ("sinfo", "scontrol", "squeue", "scancel", "sbatch", "srun")
# every daemon this tool starts carries this variable (naming its state folder), and so does what
# they spawn (slurmstepd): `down` finds exactly those, and nothing it did not start
MARK = "CNNBENCH_SLURM_DAEMON"
UP_TIMEOUT_S = 60


@dataclasses.dataclass(frozen=True)
class Node:
    name: str
    cpus: int
    real_memory_mb: int


def conf_path() -> Path:
    return STATE_DIR / "slurm.conf"


def export_line() -> str:
    return f"export SLURM_CONF={conf_path()}"


def _which(tool: str) -> str | None:
    found = shutil.which(tool)
    if found is None and Path("/usr/sbin", tool).exists():  # root's PATH may lack /usr/sbin
        found = str(Path("/usr/sbin", tool))
    return found


def missing_tools() -> list[str]:
    """What `up` needs and this machine lacks: root, the daemons and the client commands."""
    missing = [t for t in (*DAEMONS, *CLIENTS) if _which(t) is None]
    if os.geteuid() != 0:
        missing.insert(0, "root")
    return missing


def mem_total_mb() -> int:
    """MemTotal in MiB, as slurmd reports the node's memory."""
    text = Path("/proc/meminfo").read_text()
    return int(re.search(r"^MemTotal:\s+(\d+) kB", text, re.MULTILINE).group(1)) // 1024


def this_node(reserve_mb: int = DEFAULT_RESERVE_MB) -> Node:
    real = mem_total_mb() - reserve_mb
    if real < 1:
        raise BenchInputError(f"--reserve-mb {reserve_mb} leaves no memory for jobs: this machine has "
                              f"{mem_total_mb()} MiB. Received: reserve_mb={reserve_mb}")
    return Node(socket.gethostname().split(".")[0], os.cpu_count() or 1, real)


def slurm_conf(node: Node) -> str:
    """slurm.conf for one node that is also its own controller, every path in STATE_DIR."""
    d = STATE_DIR
    return "\n".join([
        f"ClusterName={CLUSTER}",
        # the name is the machine's, the address loopback: nothing off this machine can reach it, and
        # no name lookup can send the daemons elsewhere
        f"SlurmctldHost={node.name}(127.0.0.1)",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={d / 'munge' / 'munge.socket'}",   # our munged, not /run/munge's
        f"SlurmctldPort={CTLD_PORT}",
        f"SlurmdPort={SLURMD_PORT}",
        f"StateSaveLocation={d / 'state'}",
        f"SlurmdSpoolDir={d / 'spool'}",
        f"SlurmctldPidFile={d / 'slurmctld.pid'}",
        f"SlurmdPidFile={d / 'slurmd.pid'}",
        f"SlurmctldLogFile={d / 'log' / 'slurmctld.log'}",
        f"SlurmdLogFile={d / 'log' / 'slurmd.log'}",
        f"PlugStackConfig={d / 'plugstack.conf'}",
        # no cgroups: processes are tracked by their parent ids, and tasks are not bound to cores
        # (the harness splits the cores between processes with its own thread counts)
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        # no database: each finished job's state is appended here (job_state() reads it), so the
        # controller may forget finished jobs soon; `sbatch --wait` polls every 2 s only while
        # 2 s < MinJobAge/2 (then every 8, then 32 s: a 25 s job took 42 s to return)
        "JobCompType=jobcomp/filetxt",
        f"JobCompLoc={d / 'log' / 'jobcomp.log'}",
        "MinJobAge=4",
        "SchedulerType=sched/backfill",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",   # cores are consumed; memory is reported, not reserved
        "MpiDefault=none",
        "MailProg=/bin/true",  # no mail is sent; the default (/bin/mail) is not installed
        "ReturnToService=2",
        "SlurmdTimeout=60",
        "KillWait=5",
        f"NodeName={node.name} NodeAddr=127.0.0.1 CPUs={node.cpus} RealMemory={node.real_memory_mb} State=UNKNOWN",
        f"PartitionName={PARTITION} Nodes={node.name} Default=YES MaxTime=INFINITE State=UP",
        "",
    ])


def slurm_env() -> dict[str, str]:
    """This process's environment with SLURM_CONF naming our configuration."""
    return {**os.environ, "SLURM_CONF": str(conf_path())}


def _run(*cmd: str, check: bool = True, env: dict | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env or slurm_env(), timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {(r.stderr or r.stdout).strip()}")
    return r


# ---- what is running ----------------------------------------------------------------------------
def _environ(pid: int) -> bytes:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/environ").read_bytes()
    return b""


def _ppid(pid: int) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    return None


def _ancestors() -> set[int]:
    mine, pid = set(), os.getpid()
    while pid and pid not in mine:
        mine.add(pid)
        pid = _ppid(pid) or 0
    return mine


def our_processes() -> list[int]:
    """The daemons this tool started (whatever run started them), what they spawned (slurmstepd,
    job tasks), never this process or its parents."""
    mark = f"{MARK}={STATE_DIR}".encode()
    pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    marked = {p for p in pids if mark in _environ(p).split(b"\0")}
    parent = {p: _ppid(p) for p in pids}
    found, grew = set(marked), True
    while grew:  # and their descendants: job tasks carry the submitter's environment, not the mark
        more = {p for p, pp in parent.items() if pp in found and p not in found}
        found |= more
        grew = bool(more)
    return sorted(found - _ancestors())


def daemons() -> dict[str, int | None]:
    """Each daemon's pid where it runs (from its pid file), else None."""
    files = {"munged": STATE_DIR / "munge" / "munged.pid", "slurmctld": STATE_DIR / "slurmctld.pid",
             "slurmd": STATE_DIR / "slurmd.pid"}
    found: dict[str, int | None] = {}
    for name, f in files.items():
        pid = None
        with contextlib.suppress(OSError, ValueError):
            pid = int(f.read_text().split()[0])
        found[name] = pid if pid and alive(pid) else None
    return found


def node_state() -> str | None:
    """The node's state as sinfo reports it (idle, alloc, down*, ...), or None where none answers."""
    if not conf_path().exists() or _which("sinfo") is None:
        return None
    try:
        r = _run("sinfo", "-h", "-N", "-o", "%T", check=False, timeout=10)
    except subprocess.TimeoutExpired:
        return None
    return r.stdout.split()[0] if r.returncode == 0 and r.stdout.split() else None


def is_up() -> bool:
    return all(daemons().values()) and node_state() is not None


# ---- down ----------------------------------------------------------------------------------------
def down(quiet: bool = False) -> list[str]:
    """Cancel every job, stop every daemon this tool started (and what they spawned), remove the
    state folder; returns what it removed. Safe at any time, any number of times."""
    removed = []
    if daemons()["slurmctld"] and _which("scancel"):
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            jobs = _run("squeue", "-h", "-o", "%i", check=False, timeout=10).stdout.split()
            if jobs:
                _run("scancel", *jobs, check=False, timeout=10)
                removed.append(f"jobs {','.join(jobs)}")
    pids = stop_pids(our_processes())
    if pids:
        raise RuntimeError(f"processes {', '.join(map(str, pids))} outlived SIGKILL")
    if STATE_DIR.exists():
        shutil.rmtree(STATE_DIR, ignore_errors=True)
        removed.append(str(STATE_DIR))
    if removed and not quiet:
        print(f"slurm: removed {', '.join(removed)}", file=sys.stderr)
    return removed


# ---- up ------------------------------------------------------------------------------------------
def _port_taken(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _daemon_env() -> dict[str, str]:
    return {**slurm_env(), MARK: str(STATE_DIR)}


def _start(*cmd: str) -> None:
    _run(*cmd, env=_daemon_env())


def _log_tail(n: int = 5) -> str:
    lines = []
    for f in (STATE_DIR / "log" / "slurmctld.log", STATE_DIR / "log" / "slurmd.log"):
        with contextlib.suppress(OSError):
            lines += [f"{f.name}: {line}" for line in f.read_text().splitlines()[-n:] if "error" in line]
    return "; ".join(lines[-n:])


def up(reserve_mb: int = DEFAULT_RESERVE_MB, timeout: float = UP_TIMEOUT_S) -> Node:
    """Start munged, slurmctld and slurmd (after removing leftovers) and wait until the node is
    idle; on any failure, stop what was started, remove the folder and raise."""
    missing = missing_tools()
    if missing:
        raise BenchInputError(f"a local Slurm needs {', '.join(missing)}: run as root with the slurmctld, slurmd, "
                              f"slurm-client and munge packages installed (`bash scripts/setup.sh --cluster`)")
    node = this_node(reserve_mb)
    cleaned = down(quiet=True)
    if cleaned:
        print(f"slurm: removed what an earlier run left: {', '.join(cleaned)}", file=sys.stderr)
    taken = [p for p in (CTLD_PORT, SLURMD_PORT) if _port_taken(p)]
    if taken:
        raise BenchInputError(f"port {taken[0]} is in use (another Slurm on this machine?): a local Slurm needs "
                              f"ports {CTLD_PORT} and {SLURMD_PORT}")
    try:
        for sub in ("munge", "state", "spool", "log"):
            (STATE_DIR / sub).mkdir(parents=True, exist_ok=True)
        STATE_DIR.chmod(0o755)
        keydir = STATE_DIR / "munge" / "key"
        keydir.mkdir(mode=0o700)
        key = keydir / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o400)
        munge = STATE_DIR / "munge"
        # --force: munged refuses root without it; its socket folder must be reachable by all users
        _start(_which("munged"), "--force", f"--socket={munge / 'munge.socket'}", f"--key-file={key}",
               f"--pid-file={munge / 'munged.pid'}", f"--log-file={STATE_DIR / 'log' / 'munged.log'}",
               f"--seed-file={munge / 'munged.seed'}")
        (STATE_DIR / "plugstack.conf").write_text("")  # no SPANK plugins (not /etc/slurm's)
        conf_path().write_text(slurm_conf(node))
        _start(_which("slurmctld"), "-f", str(conf_path()))
        _start(_which("slurmd"), "-f", str(conf_path()))
        start = time.monotonic()
        state = None
        while time.monotonic() < start + timeout:
            state = node_state()
            if state == "idle":
                return node
            # a daemon writes its pid file only once it has forked and read its configuration
            if time.monotonic() > start + 5 and not all(daemons().values()):
                dead = [n for n, pid in daemons().items() if pid is None]
                raise RuntimeError(f"{', '.join(dead)} stopped during start-up. {_log_tail()}")
            time.sleep(0.3)
        raise RuntimeError(f"node {node.name} not idle within {timeout:g} s (sinfo: {state}). {_log_tail()}")
    except BaseException:
        down(quiet=True)
        raise


@contextlib.contextmanager
def local_slurm(reserve_mb: int = DEFAULT_RESERVE_MB):
    """A local Slurm for the duration of a `with` block, torn down on the way out, on failure too."""
    try:
        yield up(reserve_mb)
    finally:
        down(quiet=True)


def require_up() -> None:
    """BenchInputError unless the local Slurm is up."""
    if not is_up():
        raise BenchInputError(f"the local Slurm is not up (no daemons of {STATE_DIR}); start it with "
                              f"`python -m launch.slurm up`")


def finished_jobs(last: int = 5) -> list[str]:
    """The last finished jobs, one line each (id, name, state, exit code), from the completion log."""
    with contextlib.suppress(OSError):
        lines = (STATE_DIR / "log" / "jobcomp.log").read_text().splitlines()[-last:]
        fields = [dict(re.findall(r"(\w+)=(\S*)", line)) for line in lines]
        return [f"job {f.get('JobId')} {f.get('Name')}: {f.get('JobState')} (exit {f.get('ExitCode')})" for f in fields]
    return []


UNSETTLED = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED")


def final_state(job_id: str, timeout: float = 60.0) -> str | None:
    """A job's state once it has settled: `sbatch --wait` can return while the job is still
    COMPLETING (its processes being reaped), so wait up to `timeout` for a final one."""
    deadline = time.monotonic() + timeout
    state = job_state(job_id)
    while state in UNSETTLED and time.monotonic() < deadline:
        time.sleep(0.5)
        state = job_state(job_id)
    return state


def job_state(job_id: str) -> str | None:
    """A job's state (COMPLETED, FAILED, ...) as the controller or the completion log says."""
    r = _run("scontrol", "-o", "show", "job", str(job_id), check=False, timeout=10)
    m = re.search(r"\bJobState=(\S+)", r.stdout)
    if m:
        return m.group(1)
    with contextlib.suppress(OSError):
        for line in reversed((STATE_DIR / "log" / "jobcomp.log").read_text().splitlines()):
            if re.search(rf"\bJobId={job_id}\b", line):
                m = re.search(r"\bJobState=(\S+)", line)
                return m.group(1) if m else None
    return None
