"""`sluice serve` as a child process for the Python client checks: start it on a
free port (CPU, no Redis) and stop it with SIGTERM, failing with the check's label."""
import os
import signal
import subprocess
import sys
import time


def fail(label, msg):
    print("%s: FAIL: %s" % (label, msg), flush=True)
    sys.exit(1)


def start_server(label, binary, model_dir, tmp, extra=()):
    port_file = os.path.join(tmp, "port")
    log = open(os.path.join(tmp, "serve.log"), "w")
    proc = subprocess.Popen(
        [binary, "serve", "--port", "0", "--port-file", port_file, "--device", "cpu", "--models", model_dir,
         "--redis", "none", "--log-level", "warn"] + list(extra),
        stderr=log)
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            fail(label, "sluice serve exited early with %d (log: %s)" % (proc.returncode, log.name))
        try:
            with open(port_file) as f:
                port = int(f.read().strip() or 0)
            if port:
                return proc, port
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    proc.kill()
    fail(label, "sluice serve did not start within 60 s")


def stop_server(label, proc):
    """SIGTERM; the exit status must be 0."""
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        fail(label, "sluice serve did not stop on SIGTERM")
    if rc != 0:
        fail(label, "sluice serve exited %d after SIGTERM" % rc)


def args(doc):
    """SLUICE_BIN MODEL_DIR from argv (usage and exit 2 otherwise), and the model's name."""
    if len(sys.argv) != 3:
        print(doc)
        sys.exit(2)
    return sys.argv[1], sys.argv[2], os.path.basename(os.path.normpath(sys.argv[2]))
