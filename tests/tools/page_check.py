#!/usr/bin/env python3
"""The operator's page (GET /) in a real browser: headless Chromium driven
through the DevTools protocol (tests/tools/cdp.py) against live `sluice serve`
processes with both real models and a real redis-server.

Server A (no key file, Redis on): the models table shows both models ready
with their device and dtype, the queue table shows the Redis queue up, the
chart gets points; a chat answer streams in (more than one chunk, several
network reads of the one response); a second, long answer is stopped and the
server's running-sequence gauge drops to 0 well before it could have ended;
the embeddings box shows a cosine similarity. A screenshot is saved.
Server B (a key file): the page loads without a key, asks for one, and once it
is typed every data call carries `Authorization: Bearer` and is answered 200
(the admin route 403: the key has the infer scope); the key is never in a URL.
Throughout: every request the page makes goes to the server's own origin, no
Content-Security-Policy violation, no uncaught script error.

usage: page_check.py SLUICE_BIN MODELS_DIR OUT_DIR
MODELS_DIR holds both models (models/). Exit 0 pass, 1 fail, 77 no Chromium.
"""
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cdp  # noqa: E402
import serve_proc  # noqa: E402

LABEL = "page"
ENCODER, DECODER = "all-minilm-l6-v2", "smollm2-135m-instruct"


def fail(msg):
    print("%s: FAIL: %s" % (LABEL, msg), flush=True)
    raise SystemExit(1)


def ok(msg):
    print("%s: ok: %s" % (LABEL, msg), flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def metric(port, series):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as r:
        text = r.read().decode()
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[1])
    return None


class Requests:
    """The page's requests as the DevTools protocol saw them, by request id."""

    def __init__(self, browser):
        self.b = browser

    def all(self):
        reqs = {}
        for e in self.b.events:
            p = e.get("params", {})
            if e["method"] == "Network.requestWillBeSent":
                reqs[p["requestId"]] = {"url": p["request"]["url"], "headers": p["request"].get("headers", {}),
                                        "method": p["request"]["method"], "status": None, "reads": 0}
            elif e["method"] == "Network.responseReceived" and p["requestId"] in reqs:
                reqs[p["requestId"]]["status"] = p["response"]["status"]
            elif e["method"] == "Network.dataReceived" and p["requestId"] in reqs:
                reqs[p["requestId"]]["reads"] += 1
        return list(reqs.values())


def check_same_origin(browser, origins):
    bad = [r["url"] for r in Requests(browser).all()
           if not any(r["url"].startswith(o + "/") or r["url"] == o for o in origins)
           and not r["url"].startswith("data:")]
    if bad:
        fail("the page made requests to another origin: %s" % bad)
    csp = [e["params"]["entry"]["text"] for e in browser.events if e["method"] == "Log.entryAdded"
           and ("Content Security Policy" in e["params"]["entry"].get("text", "")
                or e["params"]["entry"].get("source") == "security")]
    if csp:
        fail("Content-Security-Policy violations: %s" % csp)
    errs = [e["params"]["exceptionDetails"] for e in browser.events if e["method"] == "Runtime.exceptionThrown"]
    if errs:
        fail("uncaught script errors: %s" % [(x.get("text"), x.get("exception", {}).get("description")) for x in errs])


def open_page(b, port):
    b.events.clear()
    b.call("Page.navigate", url="http://127.0.0.1:%d/" % port)
    b.wait("document.readyState === 'complete' && !!document.getElementById('models')", 20, "the page loads")


def run_open_server(b, port, out_dir):
    open_page(b, port)
    b.wait("document.body.dataset.loaded === '1'", 20, "the first poll")
    rows = b.wait("""(() => { const rows = [...document.querySelectorAll('#models tbody tr')];
        return rows.length === 2 && rows.every(r => r.dataset.state === 'ready')
          ? rows.map(r => [...r.cells].map(c => c.textContent)) : null; })()""", 30, "both models ready in the table")
    names = sorted(r[0] for r in rows)
    if names != [ENCODER, DECODER]:
        fail("models table shows %s" % names)
    for r in rows:
        if r[3] != "cpu" or r[4] != "fp32" or "MiB" not in r[5]:
            fail("model row without device, dtype or memory: %s" % r)
    ok("models table: %s" % rows)
    if b.eval("!document.getElementById('keyform').hidden"):
        fail("the key form shows on a server without a key file")
    q = b.wait("""(() => { const r = document.querySelector('#queues tr[data-queue="sluice"]');
        return r ? [...r.cells].map(c => c.textContent) : null; })()""", 20, "the Redis queue row")
    if q[1] != "up":
        fail("queue row %s: Redis not up" % q)
    ok("queue table: %s; %s" % (q, b.eval("document.getElementById('redis').textContent")))
    mem = b.eval("document.getElementById('memory').textContent")
    if "budget" not in mem:
        fail("memory section: %r" % mem)

    # a chat answer streams in
    b.eval("""(() => { document.getElementById('chat-model').value = '%s';
        document.getElementById('temperature').value = '0';
        document.getElementById('max-tokens').value = '24';
        document.getElementById('prompt').value = 'Name three rivers of Europe.';
        document.getElementById('send').click(); return 1; })()""" % DECODER)
    b.wait("document.getElementById('answer').dataset.state !== 'streaming'", 60, "the chat answer ends")
    state, chunks, text = b.eval("""[document.getElementById('answer').dataset.state,
        +document.getElementById('answer').dataset.chunks, document.getElementById('answer').textContent]""")
    if state != "done" or chunks < 2 or not text.strip():
        fail("chat: state %s, %d chunks, text %r" % (state, chunks, text))
    chat = [r for r in Requests(b).all() if r["url"].endswith("/v1/chat/completions")]
    if len(chat) != 1 or chat[0]["status"] != 200 or chat[0]["reads"] < 2:
        fail("chat request as the network saw it: %s" % chat)
    ok("chat streamed %d chunks over %d network reads: %r" % (chunks, chat[0]["reads"], text))

    # the stop button: the fetch is aborted and the server frees the sequence
    running = 'sluice_gen_sequences{model="%s",state="running"}' % DECODER
    tokens = 'sluice_gen_generated_tokens_total{model="%s"}' % DECODER
    before = metric(port, tokens)
    b.eval("""(() => { document.getElementById('temperature').value = '0.8';
        document.getElementById('max-tokens').value = '2000';
        document.getElementById('prompt').value = 'Write a very long story about a river.';
        document.getElementById('send').click(); return 1; })()""")
    b.wait("+document.getElementById('answer').dataset.chunks >= 3", 30, "the long answer starts")
    if metric(port, running) != 1:
        fail("while streaming, %s is %s, want 1" % (running, metric(port, running)))
    b.eval("document.getElementById('stop').click(), 1")
    b.wait("document.getElementById('answer').dataset.state === 'stopped'", 10, "the page stops")
    deadline = time.time() + 10
    while metric(port, running) != 0:
        if time.time() > deadline:
            fail("%s still %s 10 s after stop" % (running, metric(port, running)))
        time.sleep(0.1)
    made = metric(port, tokens) - before
    if made >= 2000:
        fail("the stopped answer ran to its end (%d tokens)" % made)
    ok("stop: the gauge %s dropped to 0 after %d of 2000 tokens" % (running, made))

    # embeddings: cosine similarity of two texts
    b.eval("document.getElementById('emb-go').click(), 1")
    sim = b.wait("""(() => { const o = document.getElementById('emb-sim');
        return o.dataset.state === 'done' || o.dataset.state === 'error' ? [o.dataset.state, o.value] : null; })()""",
                 30, "the similarity")
    if sim[0] != "done" or not (0.3 < float(sim[1]) <= 1.0001):
        fail("similarity: %s" % sim)
    ok("embeddings: cosine similarity %s" % sim[1])

    b.wait("+document.getElementById('chart').dataset.points >= 2", 20, "two chart points")
    if not b.eval("document.querySelectorAll('#chart polyline').length === 3"):
        fail("the chart has no lines")
    shot = b.screenshot(os.path.join(out_dir, "page.png"))
    check_same_origin(b, ["http://127.0.0.1:%d" % port])
    n = len(Requests(b).all())
    ok("%d requests, all to http://127.0.0.1:%d; no CSP violation, no script error" % (n, port))
    print("%s: screenshot: %s" % (LABEL, os.path.abspath(shot)), flush=True)


def run_key_server(b, port, key, out_dir):
    open_page(b, port)
    b.wait("!document.getElementById('keyform').hidden", 20, "the key prompt")
    first = Requests(b).all()
    page = [r for r in first if r["url"].endswith(":%d/" % port)]
    if not page or page[0]["status"] != 200:
        fail("the page itself needs no key: %s" % page)
    refused = [r for r in first if "/v1/models" in r["url"]]
    if not refused or refused[0]["status"] != 401:
        fail("without a key /v1/models should be 401: %s" % refused)
    ok("key prompt shown after %s %s" % (refused[0]["url"], refused[0]["status"]))
    mark = len(b.events)
    b.eval("""(() => { document.getElementById('key').value = '%s';
        document.getElementById('key-use').click(); return 1; })()""" % key)
    b.wait("""document.body.dataset.loaded === '1' &&
        document.querySelectorAll('#models tbody tr').length === 2""", 20, "the models after the key")
    b.pump(4.5)  # two more polls
    later = Requests(type("B", (), {"events": b.events[mark:]})()).all()
    data = [r for r in later if re.search(r"/(v1/|metrics|readyz)", r["url"])]
    if not data:
        fail("no data calls after the key was given")
    for r in data:
        if r["headers"].get("Authorization") != "Bearer " + key:
            fail("%s went without the key: %s" % (r["url"], r["headers"]))
        want = 403 if "/v1/admin/" in r["url"] else 200
        if r["status"] != want:
            fail("%s answered %s with the key, want %d" % (r["url"], r["status"], want))
    admin = [r for r in data if "/v1/admin/" in r["url"]]
    if len(admin) != 1:
        fail("the admin route asked %d times with an infer key, want once: %s" % (len(admin), admin))
    # the OpenAPI link fetches the document with the key
    b.eval("document.getElementById('openapi').click(), 1")
    b.pump(1.0)
    doc = [r for r in Requests(b).all() if r["url"].endswith("/openapi.json")]
    if len(doc) != 1 or doc[0]["status"] != 200 or doc[0]["headers"].get("Authorization") != "Bearer " + key:
        fail("the OpenAPI link with a key: %s" % doc)
    every = Requests(b).all()
    if any(key in r["url"] for r in every):
        fail("the key is in a URL")
    if b.eval("sessionStorage.getItem('sluice-key')") != key or b.eval("localStorage.length") != 0:
        fail("the key should be in sessionStorage only")
    check_same_origin(b, ["http://127.0.0.1:%d" % port])
    ok("with the key: %s" % sorted({(r["url"].split(str(port), 1)[1], r["status"]) for r in data}))
    print("%s: screenshot: %s" % (LABEL, os.path.abspath(b.screenshot(os.path.join(out_dir, "page-key.png")))),
          flush=True)


def main():
    if len(sys.argv) != 4:
        print(__doc__)
        sys.exit(2)
    binary, models, out_dir = sys.argv[1:]
    chromium = os.environ.get("SLUICE_CHROMIUM") or cdp.find_chromium()
    if not chromium:
        print("[SKIP] %s: no chromium (make deps installs it)" % LABEL)
        sys.exit(77)
    os.makedirs(out_dir, exist_ok=True)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        rport = free_port()
        redis = subprocess.Popen(["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
                                  "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL)
        procs, browser = [], None
        try:
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", rport), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.05)
            dir_a, dir_b = os.path.join(tmp, "a"), os.path.join(tmp, "b")
            os.makedirs(dir_a)
            os.makedirs(dir_b)
            a, port_a = serve_proc.start_server(LABEL, binary, models, dir_a, [
                "--redis", "redis://127.0.0.1:%d/0" % rport, "--preload", "all", "--cpu-threads", "2"])
            procs.append(a)
            keys = os.path.join(tmp, "keys")
            key = subprocess.run([binary, "keys", "add", "--scope", "infer", "--name", "page", "--file", keys],
                                 check=True, capture_output=True, text=True).stdout.strip()
            bproc, port_b = serve_proc.start_server(LABEL, binary, models, dir_b, ["--key-file", keys])
            procs.append(bproc)
            try:
                browser = cdp.Browser(chromium, tmp)
            except cdp.CdpError as e:
                fail("chromium: %s" % e)
            for domain in ("Network", "Page", "Runtime", "Log"):
                browser.call(domain + ".enable")
            run_open_server(browser, port_a, out_dir)
            run_key_server(browser, port_b, key, out_dir)
        except cdp.CdpError as e:
            fail(str(e))
        finally:
            if browser:
                browser.close()
            for p in procs:
                serve_proc.stop_server(LABEL, p)
            redis.send_signal(signal.SIGTERM)
            redis.wait(timeout=10)
    print("%s: OK in %.1f s" % (LABEL, time.time() - t0))


if __name__ == "__main__":
    main()
