"""A real StratusLab cloud for the live tests and the fixture recorder: runs
``stratus-testcloud`` (built by ``cargo build --workspace --bins``), which starts a controller
and an agent with a site network whose bridge lives in a network namespace it made, and tears
everything down when its standard input closes. Also: a TCP relay into that namespace (so code
running there reaches the controller on the root namespace's loopback) and running a function
on a thread that is inside the namespace."""

import contextlib
import ctypes
import json
import os
import socket
import subprocess
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL("libc.so.6", use_errno=True)


def binary(name):
    directory = os.environ.get("STRATUS_BIN_DIR") or str(REPO / "target" / "debug")
    path = Path(directory) / name
    if not path.exists():
        raise RuntimeError(f"{path} not found: run cargo build --workspace --bins first")
    return path


class LiveCloud:
    """The running cloud: ``endpoint``, ``username``, ``password``, ``admin_password``,
    ``netns``, ``gateway``, ``dir``, ``host``."""

    def __init__(self):
        self.process = subprocess.Popen(
            [str(binary("stratus-testcloud"))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.process.stdout.readline()
        if not line:
            self.process.wait()
            raise RuntimeError("stratus-testcloud did not start (see its output above)")
        self.__dict__.update(json.loads(line))

    def close(self):
        """Tears the cloud down (the process does it when its input closes) and waits."""
        if self.process.stdin:
            self.process.stdin.close()
        self.process.wait(timeout=300)

    def write_config(self, home, section="default", **extra):
        """Writes ``home/.stratuslab/stratuslab-user.cfg`` for this cloud's user."""
        values = {
            "endpoint": self.endpoint,
            "username": self.username,
            "password": self.password,
            "ca_certificate": self.ca_certificate,
        }
        values.update(extra)
        path = Path(home) / ".stratuslab" / "stratuslab-user.cfg"
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [f"[{section}]"] + [f"{k} = {v}" for k, v in values.items()]
        path.write_text("\n".join(lines) + "\n")
        return path

    def agent_log(self):
        return (Path(self.dir) / "agent.log").read_text(errors="replace")


@contextlib.contextmanager
def in_netns(name):
    """Moves the calling thread into network namespace `name` for the block (other threads
    stay where they are)."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {name}")
        try:
            yield
        finally:
            if _libc.setns(own, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")
    finally:
        os.close(own)
        os.close(target)


def run_in_netns(name, function):
    """Runs `function()` on a thread inside namespace `name`; returns its result or raises
    its exception."""
    outcome = {}

    def body():
        try:
            with in_netns(name):
                outcome["value"] = function()
        except BaseException as e:  # handed to the caller
            outcome["error"] = e

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


class Relay:
    """Listens on 127.0.0.1 inside namespace `netns` and passes each connection to
    `target_port` on this (root) namespace's loopback: code inside the namespace reaches the
    controller through it. Only loopback traffic, on both sides."""

    def __init__(self, netns, target_port):
        self.target_port = target_port
        # A namespace's loopback starts down.
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)

        def listen():
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", 0))
            s.listen(16)
            return s

        self.listener = run_in_netns(netns, listen)
        self.port = self.listener.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                inside, _ = self.listener.accept()
            except OSError:
                return
            outside = socket.create_connection(("127.0.0.1", self.target_port))
            for a, b in ((inside, outside), (outside, inside)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source, sink):
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

    def close(self):
        self.closed = True
        self.listener.close()
