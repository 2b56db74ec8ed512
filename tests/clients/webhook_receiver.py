"""A webhook endpoint that checks every request with the `standardwebhooks`
package (an implementation of the spec independent of Tributary's).

Usage: python3 webhook_receiver.py PORT SECRET OUT_FILE

Each verified request appends its body (one JSON line) to OUT_FILE and gets
204; a request that fails verification appends {"invalid": reason} and gets
400. While the file OUT_FILE.down exists, every request gets 503; while
OUT_FILE.gone exists, 410; changes of the object ids listed in OUT_FILE.reject
(one per line) get 500.
"""
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook

port, secret, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
verifier = Webhook(secret)
log = open(out, "a", buffering=1)


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        if os.path.exists(out + ".down") or os.path.exists(out + ".gone"):
            self.send_response(503 if os.path.exists(out + ".down") else 410)
            self.end_headers()
            return
        if os.path.exists(out + ".reject"):
            rejected = set(open(out + ".reject").read().split())
            if json.loads(body).get("object_id") in rejected:
                self.send_response(500)
                self.end_headers()
                return
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            verifier.verify(body, headers)
        except Exception as e:  # any verification failure is recorded
            log.write(json.dumps({"invalid": str(e)}) + "\n")
            self.send_response(400)
            self.end_headers()
            return
        log.write(body.decode() + "\n")
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
