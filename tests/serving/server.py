"""A minimal model server under Vertex's custom-container contract, stdlib only (tests' image).

Reads AIP_HTTP_PORT, AIP_HEALTH_ROUTE, AIP_PREDICT_ROUTE and AIP_STORAGE_URI. Predictions: the
sum of an array instance (times parameters["scale"] when given); {"env": NAME} -> that variable;
{"file": NAME} -> the file's text under AIP_STORAGE_URI; {"write": 1} -> whether the model
directory is writable; {"count": TEXT} -> how many requests held an instance of that JSON text;
{"connections": 1} -> how many connections have carried a predict request (keep-alive).
Misbehaviour on demand (containerSpec.env): FAIL_ON (an instance's JSON text -> HTTP 500), BAD_ON
(-> HTTP 400), HANG_ON (-> never answers), WRONG_COUNT=1 (one prediction short), DIE_AFTER=N (the
process exits during request N+1), SLOW_S (a pause per request), NEVER_HEALTHY=1 (health 503),
DROP_EVERY=N (a connection is closed, without notice, after its Nth, 2Nth, ... answer).
"""

import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(os.environ["AIP_HTTP_PORT"])
HEALTH = os.environ["AIP_HEALTH_ROUTE"]
PREDICT = os.environ["AIP_PREDICT_ROUTE"]
STORAGE = os.environ.get("AIP_STORAGE_URI", "")
FAIL_ON = os.environ.get("FAIL_ON")
BAD_ON = os.environ.get("BAD_ON")
HANG_ON = os.environ.get("HANG_ON")
DIE_AFTER = int(os.environ.get("DIE_AFTER", "0"))
SLOW_S = float(os.environ.get("SLOW_S", "0"))
DROP_EVERY = int(os.environ.get("DROP_EVERY", "0"))
lock = threading.Lock()
served = 0
seen = {}  # instance JSON text -> requests that held it
connections = 0  # connections that carried a predict request


def predict_one(instance, scale):
    if isinstance(instance, list):
        return sum(instance) * scale
    if isinstance(instance, dict) and "env" in instance:
        return os.environ.get(instance["env"])
    if isinstance(instance, dict) and "file" in instance:
        with open(os.path.join(STORAGE, instance["file"])) as f:
            return f.read()
    if isinstance(instance, dict) and "connections" in instance:
        return connections
    if isinstance(instance, dict) and "count" in instance:
        return seen.get(instance["count"], 0)
    if isinstance(instance, dict) and "write" in instance:
        try:
            with open(os.path.join(STORAGE, "written"), "w"):
                return "writable"
        except OSError:
            return "read-only"
    return instance


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        self.posts = 0

    def send(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path != HEALTH:
            self.send(404, {"error": f"no route {self.path}"})
        elif os.environ.get("NEVER_HEALTHY"):
            self.send(503, {"error": "never ready"})
        else:
            self.send(200, {})

    def do_POST(self):
        global connections
        self.posts += 1
        if self.posts == 1:
            with lock:
                connections += 1
        self.answer()
        if DROP_EVERY and self.posts % DROP_EVERY == 0:
            self.close_connection = True  # no "Connection: close": the client learns on reuse

    def answer(self):
        global served
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path != PREDICT:
            self.send(404, {"error": f"no route {self.path}"})
            return
        with lock:
            served += 1
            if DIE_AFTER and served > DIE_AFTER:
                print(f"test server: dying after {DIE_AFTER} requests", flush=True)
                os._exit(3)
        if SLOW_S:
            time.sleep(SLOW_S)
        if "parameters" in body and not body["parameters"]:
            self.send(422, {"error": "parameters must not be empty"})
            return
        instances = body["instances"]
        texts = [json.dumps(i) for i in instances]
        with lock:
            for text in set(texts):
                seen[text] = seen.get(text, 0) + 1
        if HANG_ON in texts:
            time.sleep(3600)
        if FAIL_ON in texts:
            self.send(500, {"error": "internal failure"})
            return
        if BAD_ON in texts:
            self.send(400, {"error": f"bad instance {BAD_ON}"})
            return
        scale = (body.get("parameters") or {}).get("scale", 1)
        predictions = [predict_one(i, scale) for i in instances]
        if os.environ.get("WRONG_COUNT"):
            predictions = predictions[:-1]
        self.send(200, {"predictions": predictions, "deployedModelId": "test"})


print(f"test server: listening on {PORT}, health {HEALTH}, predict {PREDICT}", flush=True)
ThreadingHTTPServer(("0.0.0.0", PORT), Handler).serve_forever()
