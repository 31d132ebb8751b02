"""A small client of the Chrome DevTools Protocol over a WebSocket, standard
library only (no selenium, no chromedriver, no PyPI): start headless
Chromium, attach to its page, send commands and collect events.

Only what the page check needs: RFC 6455 text frames (client frames masked;
server frames unmasked, possibly fragmented), ping answered, close.
"""
import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import time
import urllib.request


class CdpError(Exception):
    pass


class WebSocket:
    def __init__(self, host, port, path, timeout=30):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        req = ("GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (path, host, port, key))
        self.sock.sendall(req.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise CdpError("websocket handshake: connection closed")
            head += chunk
        head, self.buf = head.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise CdpError("websocket handshake refused: %r" % head[:200])

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise CdpError("websocket closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _send_frame(self, opcode, payload):
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 1 << 16:
            head += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def send(self, text):
        self._send_frame(0x1, text.encode())

    def recv(self, timeout):
        """One whole text message, or None when nothing came within timeout seconds."""
        self.sock.settimeout(timeout)
        data = b""
        while True:
            try:
                b0, b1 = self._read(2)
            except socket.timeout:
                if data:
                    raise CdpError("websocket: message cut off")
                return None
            self.sock.settimeout(30)  # the rest of a frame that began arrives now
            op, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            mask = self._read(4) if b1 & 0x80 else None
            payload = self._read(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if op == 0x9:
                self._send_frame(0xA, payload)
            elif op == 0x8:
                raise CdpError("websocket closed by the browser")
            elif op in (0x0, 0x1, 0x2):
                data += payload
                if b0 & 0x80:
                    return data.decode()

    def close(self):
        try:
            self._send_frame(0x8, b"")
        except OSError:
            pass
        self.sock.close()


def find_chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    """Headless Chromium with a DevTools port, and a session on its first page."""

    def __init__(self, binary, profile_dir, width=1280, height=1600):
        self.events = []
        self.next_id = 0
        self.log = open(os.path.join(profile_dir, "chromium.log"), "w")
        args = [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-extensions", "--mute-audio",
                "--disable-features=Translate,OptimizationHints,MediaRouter",
                "--user-data-dir=" + os.path.join(profile_dir, "profile"), "--remote-debugging-port=0",
                "--window-size=%d,%d" % (width, height), "about:blank"]
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        port_file = os.path.join(profile_dir, "profile", "DevToolsActivePort")
        deadline = time.time() + 30
        port = None
        while time.time() < deadline and port is None:
            if self.proc.poll() is not None:
                raise CdpError("chromium exited with %d (log: %s)" % (self.proc.returncode, self.log.name))
            try:
                with open(port_file) as f:
                    port = int(f.readline().strip())
            except (OSError, ValueError):
                time.sleep(0.05)
        if port is None:
            self.close()
            raise CdpError("chromium did not open its DevTools port within 30 s")
        with urllib.request.urlopen("http://127.0.0.1:%d/json/list" % port, timeout=10) as r:
            targets = json.loads(r.read())
        page = next((t for t in targets if t.get("type") == "page"), None)
        if not page:
            self.close()
            raise CdpError("chromium has no page target: %r" % targets)
        path = "/" + page["webSocketDebuggerUrl"].split("/", 3)[3]
        self.ws = WebSocket("127.0.0.1", port, path)

    def call(self, method, timeout=30, **params):
        self.next_id += 1
        mid = self.next_id
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        deadline = time.time() + timeout
        while True:
            left = deadline - time.time()
            if left <= 0:
                raise CdpError("%s: no answer within %d s" % (method, timeout))
            msg = self.ws.recv(left)
            if msg is None:
                continue
            m = json.loads(msg)
            if m.get("id") == mid:
                if "error" in m:
                    raise CdpError("%s: %s" % (method, m["error"]))
                return m.get("result", {})
            if "method" in m:
                self.events.append(m)

    def pump(self, seconds):
        """Collect events for a while."""
        deadline = time.time() + seconds
        while time.time() < deadline:
            msg = self.ws.recv(max(0.001, deadline - time.time()))
            if msg:
                m = json.loads(msg)
                if "method" in m:
                    self.events.append(m)

    def eval(self, expr, timeout=30):
        """The value of a JavaScript expression in the page (promises awaited)."""
        r = self.call("Runtime.evaluate", timeout=timeout, expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise CdpError("%s: %s" % (expr, r["exceptionDetails"].get("exception", {}).get("description")))
        return r["result"].get("value")

    def wait(self, expr, timeout, what):
        """Poll a JavaScript condition until it is truthy; its value, or CdpError naming what."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            v = self.eval(expr)
            if v:
                return v
            self.pump(0.1)
        raise CdpError("%s: not within %d s" % (what, timeout))

    def screenshot(self, path):
        r = self.call("Page.captureScreenshot", timeout=60, format="png", captureBeyondViewport=True)
        with open(path, "wb") as f:
            f.write(base64.b64decode(r["data"]))
        return path

    def close(self):
        if getattr(self, "ws", None):
            self.ws.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
