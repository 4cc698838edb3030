"""A real single-node SLURM for the tests: munged, slurmctld and slurmd from
Debian's packages, in a private directory with private ports and munge socket,
started in the foreground under ``setsid`` and stopped by the PIDs started.

No systemd, cgroups or slurmdbd: ``proctrack/linuxproc``, ``task/none``, no
accounting (so the Snakemake plugin must ask ``squeue``, not ``sacct``), and
configless mode so that job steps find the configuration (``SLURM_CONF`` is not
passed into jobs). The node has a fake GPU (``gres.conf`` ``File=/dev/null``)
so that ``gpu=1`` jobs can be scheduled.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

PACKAGES = ("slurm-wlm", "munge")
MUNGE_SOCKET = Path("/run/munge/munge.socket.2")
DAEMONS = ("munged", "slurmctld", "slurmd")


def _installed() -> bool:
    return all(shutil.which(d) for d in (*DAEMONS, "sbatch", "squeue", "scontrol"))


def available() -> str | None:
    """``None`` when a cluster can be started here, else why not."""
    if _installed():
        return None
    return "SLURM is not installed (Debian's slurm-wlm and munge); as root, `bash .ci/install-slurm.sh` installs them"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SingleNodeSlurm:
    def __init__(self, root: Path, cpus: int | None = None, memory_mb: int | None = None):
        self.root = root
        self.host = socket.gethostname().split(".")[0]
        self.cpus = cpus or os.cpu_count() or 1
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
        self.memory_mb = memory_mb or max(1000, total - 2048)
        self.conf = root / "slurm.conf"
        self.pids: dict[str, int] = {}
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    def _write_config(self) -> None:
        r = self.root
        for d in ("state", "spool", "munge"):
            (r / d).mkdir(parents=True, exist_ok=True)
        (r / "munge").chmod(0o700)
        ctld_port, d_port = _free_port(), _free_port()
        self.ctld_port = ctld_port
        self.conf.write_text(f"""ClusterName=ldtest
SlurmctldHost={self.host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
AuthType=auth/munge
CredType=cred/munge
SlurmctldParameters=enable_configless
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/slurmctld.log
SlurmdLogFile={r}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
MinJobAge=300
ReturnToService=2
GresTypes=gpu
NodeName={self.host} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb} Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
        (r / "gres.conf").write_text(f"NodeName={self.host} Name=gpu File=/dev/null\n")

    def _start(self, name: str, args: list[str]) -> None:
        log = open(self.root / f"{name}.out", "wb")
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        self.pids[name] = proc.pid

    def start(self, timeout: float = 60.0) -> SingleNodeSlurm:
        self._write_config()
        if not self._munge_works():
            # munged on its default socket (slurmd fetches its configuration before it could be told another)
            m = self.root / "munge"
            key = Path("/etc/munge/munge.key")
            if not key.is_file():
                key = m / "munge.key"
                key.write_bytes(os.urandom(1024))
                key.chmod(0o600)
            MUNGE_SOCKET.parent.mkdir(parents=True, exist_ok=True)
            self._start(
                "munged",
                [
                    "munged",
                    "--foreground",
                    "--force",
                    f"--key-file={key}",
                    f"--pid-file={m / 'munged.pid'}",
                    f"--log-file={m / 'munged.log'}",
                    f"--seed-file={m / 'munged.seed'}",
                ],
            )
            self._wait(self._munge_works, timeout, "munged")
        self._start("slurmctld", ["slurmctld", "-D", "-f", str(self.conf)])
        self._wait(lambda: self._run("scontrol", "ping").returncode == 0, timeout, "slurmctld")
        self._start("slurmd", ["slurmd", "-D", "--conf-server", f"127.0.0.1:{self.ctld_port}"])
        self._wait(lambda: "idle" in self._run("sinfo", "-h", "-o", "%T").stdout, timeout, "slurmd (node idle)")
        return self

    def _munge_works(self) -> bool:
        """A munged answers on the default socket (ours, or one already running here, which is then used)."""
        if not MUNGE_SOCKET.exists():
            return False
        cred = subprocess.run(["munge", "-n"], capture_output=True, timeout=10)
        return (
            cred.returncode == 0
            and subprocess.run(["unmunge"], input=cred.stdout, capture_output=True, timeout=10).returncode == 0
        )

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), env=self.env, capture_output=True, text=True, timeout=30)

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            dead = [n for n, pid in self.pids.items() if not _alive(pid)]
            if dead or time.monotonic() > deadline:
                logs = "\n".join(
                    f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}"
                    for p in sorted(self.root.glob("*.out")) + sorted(self.root.glob("*.log"))
                )
                self.stop()
                raise RuntimeError(f"{what} did not come up (dead: {dead})\n{logs}")
            time.sleep(0.2)

    def scontrol(self, *args: str) -> subprocess.CompletedProcess:
        return self._run("scontrol", *args)

    def squeue(self) -> list[tuple[str, str, str]]:
        """(job id, comment, state) of the jobs SLURM knows (the Snakemake plugin
        puts the rule and wildcards in the comment)."""
        out = self._run("squeue", "-h", "-o", "%i|%k|%T").stdout
        return [tuple(line.split("|")) for line in out.splitlines() if line.strip()]

    def gpu_jobs(self) -> set[str]:
        """Ids of the jobs that asked for a GPU (``tres-per-job`` holds ``gres:gpu``)."""
        out = self._run("squeue", "-h", "-O", "JobID:|,tres-per-job:").stdout
        return {line.split("|")[0].strip() for line in out.splitlines() if "gres:gpu" in line}

    def stop(self) -> None:
        """Stop exactly the daemons this object started (by PID), newest first."""
        for name in reversed(list(self.pids)):
            pid = self.pids[name]
            if _alive(pid):
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + 15
                while _alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.1)
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)
        self.pids.clear()


def _alive(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
