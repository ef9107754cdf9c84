"""hello: the smallest berth app. Answers every request with a greeting and the release
that served it; set GREETING with `berth env set hello GREETING=hi`."""
import http.server
import os
import sys

GREETING = os.environ.get("GREETING", "Hello")
RELEASE = os.environ.get("BERTH_RELEASE", "?")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path == "/crash":
            print("crash requested, exiting with code 3", flush=True)
            os._exit(3)
        body = f"{GREETING} from berth! release=v{RELEASE} path={self.path}\n".encode()
        self.send_response(200)
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
