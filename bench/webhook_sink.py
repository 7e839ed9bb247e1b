"""A webhook receiver for bench/alert_delivery.sh: answers 200 to every POST and appends the
receipt time (Unix seconds) and the event ("fired"/"resolved") to the file named by argv[2]."""
import http.server
import json
import sys
import time


class Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        at = time.time()
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        event = json.loads(body).get("event", "?")
        with open(sys.argv[2], "a") as log:
            log.write("%.6f %s\n" % (at, event))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
