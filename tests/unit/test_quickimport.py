"""rootless.registry.quickimport: trio, httpx and httpcore load without `ldconfig -p` and
without anyio, and still work: a fresh interpreter imports them that way, then makes a real
HTTP request with httpx on trio to a server on loopback and runs a trio worker thread."""

from __future__ import annotations

import json
import subprocess
import sys

from rootless.registry.quickimport import libc_first

SCRIPT = r"""
import json, sys, threading
from http.server import BaseHTTPRequestHandler, HTTPServer

spawned = []


def audit(event, args):
    if event == "subprocess.Popen":
        spawned.append(str(args[0]))


sys.addaudithook(audit)

import rootless.registry.quickimport  # noqa: F401
import httpcore._synchronization as sync

report = {
    "spawned": spawned[:],
    "loaded": [m for m in ("trio", "httpx", "httpcore") if m in sys.modules],
    "anyio_in_httpcore": sync.anyio is not None,
    "anyio_entry": repr(sys.modules.get("anyio", "absent")) if "anyio" in sys.modules else "absent",
}

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"pong"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

server = HTTPServer(("127.0.0.1", 0), Handler)
threading.Thread(target=server.serve_forever, daemon=True).start()

import httpx
import trio

def thread_name():
    with open(f"/proc/self/task/{threading.get_native_id()}/comm") as f:
        return f.read().strip()

async def main():
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{server.server_port}/")
    report["body"] = response.text
    report["thread"] = await trio.to_thread.run_sync(thread_name)

trio.run(main)
server.shutdown()
print(json.dumps(report))
"""


def test_imports_skip_ldconfig_and_anyio_and_still_work() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True
    )
    report = json.loads(done.stdout)
    assert report["loaded"] == ["trio", "httpx", "httpcore"]
    assert not [p for p in report["spawned"] if "ldconfig" in p], report["spawned"]
    assert report["anyio_in_httpcore"] is False
    assert report["anyio_entry"] == "absent"  # the block is lifted: a later import works
    assert report["body"] == "pong"
    # trio found pthread_setname_np in libc.so.6: its worker thread is named after the
    # function it runs (cut to the kernel's 15 characters), not left as "python"
    assert report["thread"] == "thread_name fro", report["thread"]


def test_libc_first_answers_pthread_and_c_and_defers_the_rest() -> None:
    asked: list[str] = []

    def original(name: str) -> str | None:
        asked.append(name)
        return f"lib{name}.so.1"

    find = libc_first(original)
    assert find("pthread") == "libc.so.6"
    assert find("c") == "libc.so.6"
    assert find("fuse3") == "libfuse3.so.1"
    assert asked == ["fuse3"]
