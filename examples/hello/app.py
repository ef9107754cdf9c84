"""hello: the smallest berth app. Answers every request with a greeting and the release
that served it; set GREETING with `berth env set hello GREETING=hi`. FAIL_RATE (0 to 1,
default 0) makes it answer that share of requests with a 500, to try a canary on."""
import http.server
import os
import random
import sys

GREETING = os.environ.get("GREETING", "Hello")
RELEASE = os.environ.get("BERTH_RELEASE", "?")
FAIL_RATE = float(os.environ.get("FAIL_RATE", "0") or 0)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path == "/crash":
            print("crash requested, exiting with code 3", flush=True)
            os._exit(3)
        status = 200
        body = f"{GREETING} from berth! release=v{RELEASE} path={self.path}\n".encode()
        if FAIL_RATE > 0 and random.random() < FAIL_RATE:
            status = 500
            body = f"failing on purpose (FAIL_RATE={FAIL_RATE}) release=v{RELEASE}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        sys.stdout.write("request: " + (fmt % args) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "8000"))
    server = http.server.ThreadingHTTPServer(("0.0.0.0", port), Handler)
    print(f"hello listening on port {port}", flush=True)
    server.serve_forever()
