#!/usr/bin/env python3
"""GET /openapi.json of a live `sluice serve` checked by a third party:
openapi-spec-validator (OpenAPI 3.1), then against the route table as written
in api/http/routes.c (read here as text, not through the server): every row
with a method is an operation of the document, with its scopes as security
requirements, and the document has no other operation; every error answer
has the OpenAI error shape; and real answers of the server (successes and
errors) fit the schemas the document gives for their route and status.

usage: openapi_check.py SLUICE_BIN MODELS_DIR [ROUTES_C]
Starts its own server on a free port (CPU, no Redis) and stops it with
SIGTERM. Run by tests/tools/openapi_check.sh inside a virtualenv that has
openapi-spec-validator.
"""
import json
import os
import re
import sys
import tempfile
import urllib.error
import urllib.request

from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serve_proc  # noqa: E402

LABEL = "openapi"
ROW = re.compile(r'^\s*\{\s*("([A-Z]+)"|NULL)\s*,\s*"([^"]+)"\s*,\s*([A-Z| 0]+?)\s*,', re.M)


def fail(msg):
    serve_proc.fail(LABEL, msg)


def table(path):
    """[(method or None, pattern, {scopes})] of api_routes[] in routes.c."""
    text = open(path).read()
    start = text.index("api_routes[] = {")
    end = text.index("};", start)
    rows = []
    for m in ROW.finditer(text[start:end]):
        scope = m.group(4)
        scopes = {s for s, word in (("infer", "INFER"), ("admin", "ADMIN")) if word in scope}
        rows.append((m.group(2), m.group(3), scopes))
    if len(rows) < 20:
        fail("read only %d rows from %s" % (len(rows), path))
    return rows


def call(port, method, path, body=None):
    """(status, parsed JSON answer) of one request."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


# Real answers, each checked against the schema the document gives for its route and status.
SAMPLES = [
    ("GET", "/healthz", None),
    ("GET", "/readyz", None),
    ("GET", "/v1/models", None),
    ("GET", "/v1/models/all-minilm-l6-v2", None),
    ("POST", "/v1/embeddings", {"input": ["one", "two"], "model": "all-minilm-l6-v2"}),
    ("POST", "/v1/expand", {"terms": ["car"], "k": 3, "model": "all-minilm-l6-v2"}),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}),
    ("POST", "/v1/completions", {"prompt": "The sky is", "max_tokens": 3}),
    ("GET", "/v1/admin/config", None),
    ("POST", "/v1/embeddings", {"input": ""}),                    # 400, the Error shape
    ("POST", "/v1/chat/completions", {"messages": [], "temprature": 1}),
    ("GET", "/v1/models/no-such-model", None),                   # 404
    ("POST", "/v1/tasks", {"input": "x"}),                       # 503 queue_disabled (--redis none)
]


def check_answers(doc, port):
    for method, path, body in SAMPLES:
        status, answer = call(port, method, path, body)
        pattern = path if path in doc["paths"] else re.sub(r"/v1/models/[^/]+$", "/v1/models/{name}", path)
        op = doc["paths"].get(pattern, {}).get(method.lower())
        if not op or str(status) not in op["responses"]:
            fail("%s %s answered %d, which the document does not list for it" % (method, path, status))
        schema = dict(op["responses"][str(status)]["content"]["application/json"]["schema"])
        schema["components"] = doc["components"]  # the $refs resolve against this root
        errors = sorted(Draft202012Validator(schema).iter_errors(answer), key=lambda e: list(e.path))
        if errors:
            fail("%s %s -> %d does not fit its schema: %s at %s" % (method, path, status, errors[0].message,
                                                                  list(errors[0].path)))
    print("%s: %d real answers (2xx and errors) fit the schemas the document gives them" % (LABEL, len(SAMPLES)))


def main():
    if len(sys.argv) not in (3, 4):
        print(__doc__)
        sys.exit(2)
    binary, models = sys.argv[1], sys.argv[2]
    routes_c = sys.argv[3] if len(sys.argv) == 4 else "api/http/routes.c"
    rows = table(routes_c)
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = serve_proc.start_server(LABEL, binary, models, tmp)
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/openapi.json" % port, timeout=30) as r:
                ctype = r.headers.get("Content-Type", "")
                doc = json.loads(r.read())
            check_answers(doc, port)
        finally:
            serve_proc.stop_server(LABEL, proc)
    if not ctype.startswith("application/json"):
        fail("Content-Type %r" % ctype)
    try:
        validate(doc)
    except Exception as e:  # the validator's own error names the place
        fail("openapi-spec-validator: %s" % e)
    if doc.get("openapi") != "3.1.0":
        fail("openapi %r, want 3.1.0" % doc.get("openapi"))
    print("%s: openapi-spec-validator: valid OpenAPI %s, %d paths" % (LABEL, doc["openapi"], len(doc["paths"])))

    want = {}
    for method, pattern, scopes in rows:
        if method is None:
            continue  # catch-all rows answer 404 for any method: not operations
        want[(method.lower(), pattern)] = scopes
    have = {}
    for pattern, item in doc["paths"].items():
        for method, op in item.items():
            if method in ("get", "put", "post", "delete", "patch", "head", "options", "trace"):
                have[(method, pattern)] = op
    missing = sorted(set(want) - set(have))
    extra = sorted(set(have) - set(want))
    if missing:
        fail("routes of the table missing from the document: %s" % missing)
    if extra:
        fail("operations in the document that are not routes of the table: %s" % extra)
    for key, scopes in want.items():
        op = have[key]
        sec = op.get("security")
        got = set()
        for req in sec or []:
            got |= set(req.get("bearer", []))
        if sec is None or got != scopes:
            fail("%s %s: security %r, the table says %s" % (key[0].upper(), key[1], sec, sorted(scopes) or "open"))
        codes = set(op["responses"])
        if scopes and not {"401", "403"} <= codes:
            fail("%s %s needs a key but does not list 401 and 403" % (key[0].upper(), key[1]))
        for code, resp in op["responses"].items():
            # an error answers the Error shape, unless the route reports a state with it (/readyz's 503)
            same_as_ok = "200" in op["responses"] and resp.get("content") == op["responses"]["200"].get("content")
            if code[0] in "45" and "Error" not in json.dumps(resp) and not same_as_ok:
                fail("%s %s: %s does not answer the Error shape" % (key[0].upper(), key[1], code))
    err = doc["components"]["schemas"]["Error"]["properties"]["error"]
    if set(err["required"]) != {"message", "type", "param", "code"}:
        fail("the Error schema is not OpenAI's shape: %r" % err)
    print("%s: %d routes of %s, each one operation with its scopes; nothing else" % (LABEL, len(want), routes_c))
    print("%s: OK" % LABEL)


if __name__ == "__main__":
    main()
