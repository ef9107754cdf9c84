"""A Python web app with a dependency from PyPI (bottle), built by berth's Python provider."""
import os

import bottle


@bottle.route("/")
def index():
    return f"python-app on bottle {bottle.__version__}\n"


@bottle.route("/healthz")
def healthz():
    return "ok\n"


if __name__ == "__main__":
    bottle.run(host="0.0.0.0", port=int(os.environ.get("PORT", "8000")), quiet=False)
