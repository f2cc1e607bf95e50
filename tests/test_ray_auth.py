"""Ray's token authentication, as cluster.yaml turns it on: a loopback head started with
RAY_AUTH_MODE=token accepts a driver that has the token and refuses one without it, and
`xlt run --address` says so in one line. Its own Ray (own temp dir and port), stopped by pid."""

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.ray]

DRIVER = """
import sys
from xlt.errors import XltError
from xlt.study.runner import connect
try:
    connect(sys.argv[1])
    import ray
    print("connected", ray.get(ray.remote(lambda: 41 + 1).remote()))
except XltError as e:
    print("refused:", e)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def token_head(tmp_path_factory):
    tmp = Path(f"/tmp/xlt-auth-{os.getpid()}")  # short: Ray's socket paths must fit 107 bytes
    token, port = secrets.token_hex(32), free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    ray = str(Path(sys.executable).with_name("ray"))
    started = subprocess.run([ray, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=1",
                              "--include-dashboard=false", f"--temp-dir={tmp}", "--object-store-memory=80000000",
                              "--disable-usage-stats"], env=env, capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stderr[-2000:]
    yield f"127.0.0.1:{port}", token
    # stop this head only (never `ray stop`: it would stop every Ray on the machine)
    for attempt in range(2):
        pids = subprocess.run(["pgrep", "-f", str(tmp)], capture_output=True, text=True).stdout.split()
        for pid in pids:
            os.kill(int(pid), signal.SIGKILL if attempt else signal.SIGTERM)
        time.sleep(2)
    subprocess.run(["rm", "-rf", str(tmp)])


def drive(address: str, env: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")} | env
    out = subprocess.run([sys.executable, "-c", DRIVER, address], env=env, capture_output=True, text=True, timeout=180)
    return out.stdout.strip()


def test_a_driver_with_the_token_connects(token_head):
    address, token = token_head
    assert drive(address, {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}) == "connected 42"


def test_a_driver_without_the_token_is_refused_in_one_line_that_names_it(token_head):
    address, _ = token_head
    said = drive(address, {})
    assert said.startswith("refused: cannot connect to the Ray cluster at") and "RAY_AUTH_MODE=token" in said, said
    assert len(said.splitlines()) == 1
    wrong = drive(address, {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)})
    assert wrong.startswith("refused: cannot connect"), wrong
