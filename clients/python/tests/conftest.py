"""A real redis-server and a real `sluice serve` (CPU, the test model) for the
client's tests. SLUICE_BIN (default bin/sluice) and SLUICE_TEST_MODEL (default
models/all-minilm-l6-v2) are read relative to the repository root, as tests/run.sh sets them."""
import os
import shutil
import socket
import subprocess
import tempfile
import time

import httpx
import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


def _path(env, default):
    p = os.environ.get(env, default)
    return p if os.path.isabs(p) else os.path.join(ROOT, p)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    """redis-server on a free port, and sluice serve on it serving queues pyq and other."""

    def __init__(self, tmp, extra=(), preload=True):
        self.tmp = tmp
        self.redis_port = _free_port()
        self.redis = None
        self.serve = None
        self.log = open(os.path.join(tmp, "serve.log"), "w")
        self.start_redis()
        port_file = os.path.join(tmp, "port")
        model = _path("SLUICE_TEST_MODEL", "models/all-minilm-l6-v2")
        self.serve = subprocess.Popen(
            [_path("SLUICE_BIN", "bin/sluice"), "serve", "--port", "0", "--port-file", port_file, "--device", "cpu",
             "--models", os.path.dirname(model), *(("--preload", os.path.basename(model)) if preload else ()),
             "--redis", "redis://127.0.0.1:%d/0" % self.redis_port, "--queue", "pyq,other",
             "--log-level", "warn", "--max-queue-delay-ms", "2", *extra], stderr=self.log)
        deadline = time.time() + 90
        self.port = 0
        while time.time() < deadline and not self.port:
            if self.serve.poll() is not None:
                raise RuntimeError("sluice serve exited with %d (log: %s)" % (self.serve.returncode, self.log.name))
            try:
                with open(port_file) as f:
                    self.port = int(f.read().strip() or 0)
            except (OSError, ValueError):
                time.sleep(0.1)
        if not self.port:
            raise RuntimeError("sluice serve did not write its port")
        self.url = "http://127.0.0.1:%d" % self.port
        for _ in range(300):  # the model loads and the Redis intake comes up
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            raise RuntimeError("sluice serve never became ready (log: %s)" % self.log.name)

    def start_redis(self):
        """redis-server on redis_port (again, empty, after stop_redis)."""
        self.redis = subprocess.Popen(
            ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--dir", self.tmp, "--save", "",
             "--appendonly", "no", "--logfile", os.path.join(self.tmp, "redis.log")])
        for _ in range(100):
            if self.redis_cli("PING") == "PONG":
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not come up")

    def stop_redis(self):
        self.redis.terminate()
        self.redis.wait(timeout=30)

    def model_of_kind(self, kind):
        """The name of a served model of that kind ("encoder", "decoder"), or None."""
        models = httpx.get(self.url + "/v1/models", timeout=10).json()["data"]
        return next((m["id"] for m in models if m.get("kind") == kind), None)

    def redis_cli(self, *args):
        r = subprocess.run(["redis-cli", "-p", str(self.redis_port), *args], capture_output=True, text=True,
                           timeout=10)
        return r.stdout.strip()

    def stop(self):
        for p in (self.serve, self.redis):
            if p is not None and p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.log.close()


def _stack(extra=(), preload=True):
    for tool in ("redis-server", "redis-cli"):
        if not shutil.which(tool):
            pytest.fail("%s not found (make deps installs it)" % tool)
    tmp = tempfile.mkdtemp(prefix="sluice-pyclient-")
    s = None
    try:
        s = Stack(tmp, extra, preload)
        yield s
    finally:
        if s is not None:
            s.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def stack():
    yield from _stack()


@pytest.fixture
def limited():
    """A second server that answers 429 past 2 requests a second."""
    yield from _stack(("--rate-limit-rps", "2"))


@pytest.fixture
def client(stack):
    from sluice_client import Client
    with Client(stack.url, queue="pyq") as c:
        yield c


@pytest.fixture
def outage():
    """A server of its own, for tests that stop and restart its Redis."""
    yield from _stack(preload=False)


@pytest.fixture(scope="session")
def decoder(stack):
    """The decoder model next to the test model (models/ holds both after `make model`)."""
    name = stack.model_of_kind("decoder")
    if name is None:
        pytest.skip("no decoder model (GGUF) in the models folder (make model)")
    return name


@pytest.fixture
def starved():
    """A server whose memory budget no model fits: every task fails when it runs."""
    yield from _stack(("--host-memory-budget", "1M"), preload=False)
