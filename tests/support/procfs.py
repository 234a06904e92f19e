"""What /proc says of a process: its live children, its open files and sockets, the ports it listens on, whether it
is alive (Linux only)."""

import os
from pathlib import Path


def _children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


def _metrics_dir(worker: int) -> Path:
    """The multiprocess metrics directory the supervisor gave its workers (where their open files are)."""
    opened = [Path(os.readlink(fd)) for fd in Path(f"/proc/{worker}/fd").iterdir()]
    return next(p.parent for p in opened if p.parent.name.startswith("tenantgate-metrics-"))


def _sockets(pid: int) -> set[str]:
    try:
        return {os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()}
    except OSError:  # exited meanwhile
        return set()


def _listeners(inodes: set[str]) -> dict[int, int]:
    """Listening TCP sockets among ``inodes`` ("socket:[N]"), counted by port."""
    ports: dict[int, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            if fields[3] == "0A" and f"socket:[{fields[9]}]" in inodes:  # 0A: LISTEN
                port = int(fields[1].rpartition(":")[2], 16)
                ports[port] = ports.get(port, 0) + 1
    return ports


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
