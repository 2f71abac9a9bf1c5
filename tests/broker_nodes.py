"""Several real MQTT brokers for tests: one mosquitto per node, each on a free loopback port,
that a test can kill mid-run (SIGKILL: a crashed node, no goodbye to its clients)."""

from __future__ import annotations

import getpass
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from tests.broker import MOSQUITTO
from tests.registry import free_port


class BrokerNode:
    """One mosquitto, configured as ``tests/broker.py`` does (anonymous, TCP_NODELAY);
    ``extra``: more configuration lines (a bridge)."""

    def __init__(self, tmp: Path, extra: str = "") -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log_path = tmp / "mosquitto.log"
        conf = tmp / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\npersistence false\n"
            f"user {getpass.getuser()}\nallow_anonymous true\nset_tcp_nodelay true\n{extra}"
        )
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(conf)], stdout=self._log, stderr=self._log
        )
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(self.log_path.read_text()[-2000:])
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.close()
                    raise RuntimeError("mosquitto did not start within 10 s") from None
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def kill(self) -> None:
        """The node crashes: its clients see their connections reset."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self._log.close()


@contextmanager
def broker_nodes(tmp: Path, count: int) -> Iterator[list[BrokerNode]]:
    """``count`` independent mosquitto nodes; all stopped at the end."""
    with ExitStack() as stack:
        nodes = []
        for i in range(count):
            node = BrokerNode(tmp / f"node{i}")
            stack.callback(node.close)
            nodes.append(node)
        yield nodes
