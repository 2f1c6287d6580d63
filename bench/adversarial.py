"""Adversarial input against a real sidecar process: unfinished frames, invented mimes, big frames.

Three bounded measurements (issue 20, points 4-6), each against a fresh `gremlinlb sidecar`
process in front of one local Gremlin Server (gremlinlb.devservers), everything on loopback:

- unfinished: N raw clients each send most of one large binary frame and never finish it; the
  sidecar's RSS is sampled (peak, and a few seconds after the clients left) and compared with
  its memory budget + 64 MiB; the held-bytes gauge and how many clients the sidecar closed
  (with which close code) are reported.
- mimes: N clients each send one GraphSON request in a binary frame whose mime is an invented
  variant (`application/vnd.gremlin-v3.0+json;x=<i>`); backend connections before and after,
  and what each client got back within a few seconds.
- stall: one client sends a few ~9 MB read-only GraphBinary requests (`inject(<1.5 M ints>)`),
  while another sends small requests the sidecar answers itself (an unknown op: a 498 with no
  backend involved) back to back; the longest round trip of the small requests, minus their
  median, is the longest event-loop stall one of them saw (also the 99th percentile, and the
  longest in --quiet-seconds of the same probes before any big frame: the machine's own noise).

Not a test: it asserts nothing, it prints what it measured (and writes it with --out).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gremlin_python.driver.request import RequestMessage
from gremlin_python.driver.serializer import GraphBinarySerializersV1
from gremlin_python.process.traversal import Bytecode

from gremlinlb.devservers import Fleet

MiB = 1024 * 1024
DEFAULT_BUDGET = 96 * MiB


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class Sidecar:
    """A `gremlinlb sidecar` process on free loopback ports."""

    def __init__(self, endpoints: list[str], *extra: str) -> None:
        self.port, self.admin_port = free_port(), free_port()
        command = [
            sys.executable,
            "-m",
            "gremlinlb.cli",
            "--log-level",
            "ERROR",
            "sidecar",
            "--listen",
            f"127.0.0.1:{self.port}",
            "--admin",
            f"127.0.0.1:{self.admin_port}",
            "--endpoints",
            ",".join(endpoints),
            *extra,
        ]
        self.process = subprocess.Popen(command)
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(self.admin + "/readyz/backends", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("the sidecar did not become ready")
            time.sleep(0.1)

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def metric(self, name: str) -> float:
        """The sum of every series of `name` in /metrics."""
        with urllib.request.urlopen(self.admin + "/metrics", timeout=10) as response:
            text = response.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


@contextmanager
def sidecar(endpoints: list[str], *extra: str) -> Iterator[Sidecar]:
    process = Sidecar(endpoints, *extra)
    try:
        yield process
    finally:
        process.stop()


class RawWebSocket:
    """A WebSocket client on a bare socket: the bench decides what is sent and when."""

    def __init__(self, port: int, timeout: float = 30.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET /gremlin HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError("closed during the upgrade")
            head += chunk
        self.buffer = b""
        self.done = False  # its close was already read

    @staticmethod
    def header(length: int, opcode: int = 0x2) -> bytes:
        """A masked frame header with an all-zero mask (the payload goes out unchanged)."""
        if length < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
        elif length < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
        return head + b"\0\0\0\0"

    def send(self, payload: bytes) -> None:
        if len(payload) < 65536:
            self.sock.sendall(self.header(len(payload)) + payload)
            return
        # Two sends, not one joined copy: a 9 MB join here would hold this process's GIL and
        # stall the prober thread beside it, which would be counted as the sidecar's stall.
        self.sock.sendall(self.header(len(payload)))
        self.sock.sendall(payload)

    def read(self) -> tuple[int, bytes] | None:
        """(opcode, payload) of the next frame; None once the socket closed."""
        while True:
            if len(self.buffer) >= 2:
                opcode, size = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F
                offset = 2
                if size == 126 and len(self.buffer) >= 4:
                    (size,) = struct.unpack("!H", self.buffer[2:4])
                    offset = 4
                elif size == 127 and len(self.buffer) >= 10:
                    (size,) = struct.unpack("!Q", self.buffer[2:10])
                    offset = 10
                if (size < 126 or offset > 2) and len(self.buffer) >= offset + size:
                    payload = self.buffer[offset : offset + size]
                    self.buffer = self.buffer[offset + size :]
                    return opcode, payload
            chunk = self.sock.recv(256 * 1024)
            if not chunk:
                return None
            self.buffer += chunk

    def close(self) -> None:
        self.sock.close()


def graphbinary(op: str, processor: str, args: dict[str, object]) -> bytes:
    message = RequestMessage(processor, op, args)
    payload: bytes = GraphBinarySerializersV1().serialize_message(str(uuid.uuid4()), message)
    return payload


def measure_unfinished(endpoints: list[str], clients: int, frame_mib: float) -> dict[str, object]:
    sent_bytes = int(frame_mib * MiB)
    declared = sent_bytes + 1_000_000  # never reached: the frame stays unfinished
    with sidecar(endpoints) as process:
        pid = process.process.pid
        samples = [rss(pid)]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                samples.append(rss(pid))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        held_peak = [0.0]
        closes: list[str] = []
        sockets: list[RawWebSocket] = []
        lock = threading.Lock()

        def attack() -> None:
            ws = RawWebSocket(process.port)
            with lock:
                sockets.append(ws)
            head = RawWebSocket.header(declared)
            chunk = bytes(256 * 1024)
            try:
                ws.sock.sendall(head)
                left = sent_bytes
                while left > 0:
                    ws.sock.sendall(chunk[: min(left, len(chunk))])
                    left -= len(chunk)
            except OSError as error:
                ws.done = True  # refused while sending: what did the sidecar say?
                ws.sock.settimeout(2)
                try:
                    frame = ws.read()
                except OSError:
                    frame = None
                if frame is not None and frame[0] == 0x8 and len(frame[1]) >= 2:
                    code = struct.unpack("!H", frame[1][:2])[0]
                    closes.append(f"{code} {frame[1][2:].decode(errors='replace')}")
                else:
                    closes.append(f"dropped ({type(error).__name__})")

        threads = [threading.Thread(target=attack) for _ in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        time.sleep(1.0)  # the frames sit unfinished: the attack's steady state
        held_peak[0] = process.metric("gremlinlb_sidecar_held_bytes")
        during = rss(pid)
        for ws in sockets:  # those that finished sending: were they closed meanwhile?
            if ws.done:
                continue
            ws.sock.settimeout(0.2)
            try:
                frame = ws.read()
            except TimeoutError:
                continue  # still open
            except OSError as error:
                closes.append(f"dropped ({type(error).__name__})")
                continue
            if frame is not None and frame[0] == 0x8 and len(frame[1]) >= 2:
                code = struct.unpack("!H", frame[1][:2])[0]
                closes.append(f"{code} {frame[1][2:].decode(errors='replace')}")
            elif frame is None:
                closes.append("dropped (EOF)")
        refused_metric = process.metric("gremlinlb_sidecar_clients_refused_total")
        for ws in sockets:
            ws.close()
        left_at = time.monotonic()
        time.sleep(4.0)
        after = rss(pid)
        stop.set()
        sampler.join(5)
        budget = DEFAULT_BUDGET
    return {
        "clients": clients,
        "frame_mib_sent": frame_mib,
        "rss_start_mib": round(samples[0] / MiB, 1),
        "rss_peak_mib": round(max(samples) / MiB, 1),
        "rss_while_held_mib": round(during / MiB, 1),
        "rss_4s_after_leaving_mib": round(after / MiB, 1),
        "seconds_after_leaving": round(time.monotonic() - left_at, 1),
        "aim_rss_below_mib": round((budget + 64 * MiB) / MiB, 1),
        "held_bytes_gauge_while_held": held_peak[0],
        "clients_refused": len(closes),
        "clients_refused_metric": refused_metric,
        "refusals": sorted(set(closes)),
    }


def measure_mimes(endpoints: list[str], count: int) -> dict[str, object]:
    with sidecar(endpoints) as process:
        # One ordinary GraphBinary request first, so the usual pool exists.
        ws = RawWebSocket(process.port)
        ws.send(graphbinary("eval", "", {"gremlin": "1+1", "aliases": {"g": "g"}}))
        ws.read()
        ws.close()
        time.sleep(0.5)
        before = process.metric("gremlinlb_sidecar_backend_connections")
        answers: list[str] = []

        def one(index: int) -> None:
            mime = f"application/vnd.gremlin-v3.0+json;x={index}".encode()
            body = json.dumps(
                {
                    "requestId": {"@type": "g:UUID", "@value": str(uuid.uuid4())},
                    "op": "eval",
                    "processor": "",
                    "args": {"gremlin": "1+1", "aliases": {"g": "g"}},
                }
            ).encode()
            client = RawWebSocket(process.port, timeout=5)
            started = time.monotonic()
            try:
                client.send(bytes([len(mime)]) + mime + body)
                frame = client.read()
                took = time.monotonic() - started
                if frame is None:
                    answers.append("closed without a frame")
                elif frame[0] == 0x8:
                    code = struct.unpack("!H", frame[1][:2])[0] if len(frame[1]) >= 2 else 0
                    answers.append(f"close {code} after {took:.2f}s")
                else:
                    answers.append(f"frame after {took:.2f}s: {frame[1][:90]!r}")
            except TimeoutError:
                answers.append("nothing within 5s")
            finally:
                client.close()

        threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        time.sleep(0.5)
        after = process.metric("gremlinlb_sidecar_backend_connections")
    kinds: dict[str, int] = {}
    for answer in answers:
        key = answer.split(" after ")[0] if "after" in answer else answer
        if answer.startswith("frame"):
            key = "frame: " + answer.split(": ", 1)[1][:60]
        kinds[key] = kinds.get(key, 0) + 1
    return {
        "mimes": count,
        "backend_connections_before": before,
        "backend_connections_after": after,
        "answers": kinds,
        "slowest_answer": max(answers, key=lambda a: a),
    }


def unknown_op_request() -> bytes:
    """A well-formed GraphBinary request with op `nop`, which no server knows."""
    mime = b"application/vnd.graphbinary-v1.0"
    op = b"nop"
    return (
        bytes([len(mime)])
        + mime
        + b"\x81"
        + uuid.uuid4().bytes
        + struct.pack("!i", len(op))
        + op
        + struct.pack("!i", 0)
        + struct.pack("!i", 0)
    )


def big_request(values: int) -> bytes:
    bytecode = Bytecode()
    bytecode.add_step("inject", list(range(values)))
    bytecode.add_step("count")
    return graphbinary("bytecode", "traversal", {"gremlin": bytecode, "aliases": {"g": "g"}})


def measure_stall(
    endpoints: list[str], values: int, frames: int, quiet_seconds: float
) -> dict[str, object]:
    big = big_request(values)
    small = unknown_op_request()  # the sidecar answers 498 itself: no backend involved
    with sidecar(endpoints, "--request-timeout", "60") as process:
        prober = RawWebSocket(process.port)
        latencies: list[float] = []
        quiet: list[float] = []  # the same probes with no big frame sent: this machine's noise
        sending = threading.Event()
        done = threading.Event()
        measuring_quiet = threading.Event()

        def probe() -> None:
            while not done.is_set():
                started = time.perf_counter()
                prober.send(small)
                prober.read()
                if sending.is_set():
                    latencies.append(time.perf_counter() - started)
                elif measuring_quiet.is_set():
                    quiet.append(time.perf_counter() - started)
                time.sleep(0.001)

        thread = threading.Thread(target=probe)
        thread.start()
        time.sleep(0.5)
        measuring_quiet.set()
        time.sleep(quiet_seconds)
        measuring_quiet.clear()
        sender = RawWebSocket(process.port, timeout=120)
        codes: list[int] = []
        sending.set()
        for _ in range(frames):
            sender.send(big)
            while True:
                frame = sender.read()
                if frame is None:
                    break
                if frame[0] == 0x2 and len(frame[1]) >= 22:
                    code = struct.unpack("!i", frame[1][18:22])[0]
                    if code != 206:
                        codes.append(code)
                        break
        sending.clear()
        done.set()
        thread.join(10)
        sender.close()
        prober.close()
    median = statistics.median(latencies) if latencies else 0.0
    worst = max(latencies) if latencies else 0.0
    quiet_median = statistics.median(quiet) if quiet else 0.0
    ranked = sorted(latencies)
    p99 = ranked[int(len(ranked) * 0.99)] if ranked else 0.0
    return {
        "frame_bytes": len(big),
        "values": values,
        "big_frames": frames,
        "big_frame_answers": codes,
        "small_requests_during": len(latencies),
        "small_median_ms": round(median * 1000, 2),
        "small_max_ms": round(worst * 1000, 2),
        "longest_stall_ms": round((worst - median) * 1000, 2),
        "p99_stall_ms": round((p99 - median) * 1000, 2),
        "quiet_seconds": quiet_seconds,
        "quiet_longest_stall_ms": round(((max(quiet) if quiet else 0.0) - quiet_median) * 1000, 2),
        "aim_stall_ms": 20,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Each part starts its own sidecar process; about a minute in all.",
    )
    parser.add_argument("--parts", default="unfinished,mimes,stall", help="comma-separated")
    parser.add_argument("--clients", type=int, default=24, help="unfinished-frame clients")
    parser.add_argument("--frame-mib", type=float, default=19.0, help="MiB each of them sends")
    parser.add_argument("--mimes", type=int, default=40, help="invented mime variants")
    parser.add_argument("--values", type=int, default=1_500_000, help="ints in the big frame")
    parser.add_argument("--big-frames", type=int, default=3, help="big frames sent in a row")
    parser.add_argument(
        "--quiet-seconds",
        type=float,
        default=3.0,
        help="small requests timed before the big frames: the machine's own stalls",
    )
    parser.add_argument("--label", default="", help="a name for this run in the output")
    parser.add_argument("--out", type=Path, help="also write the figures (JSON) here")
    args = parser.parse_args()
    parts = args.parts.split(",")
    results: dict[str, object] = {"label": args.label, "when": time.strftime("%Y-%m-%d %H:%M")}
    run_dir = Path(tempfile.mkdtemp(prefix="gremlinlb-adversarial-"))
    with Fleet(1, base_port=free_port_block(), run_dir=run_dir) as fleet:
        endpoints = fleet.addresses
        if "unfinished" in parts:
            print("unfinished frames...", file=sys.stderr, flush=True)
            results["unfinished"] = measure_unfinished(endpoints, args.clients, args.frame_mib)
            print(json.dumps(results["unfinished"]), file=sys.stderr, flush=True)
        if "mimes" in parts:
            print("invented mimes...", file=sys.stderr, flush=True)
            results["mimes"] = measure_mimes(endpoints, args.mimes)
            print(json.dumps(results["mimes"]), file=sys.stderr, flush=True)
        if "stall" in parts:
            print("big frames...", file=sys.stderr, flush=True)
            results["stall"] = measure_stall(
                endpoints, args.values, args.big_frames, args.quiet_seconds
            )
    text = json.dumps(results, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0


def free_port_block(start: int = 28381) -> int:
    for base in range(start, start + 500, 10):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", base))
            except OSError:
                continue
            return base
    raise RuntimeError("no free port for the server")


if __name__ == "__main__":
    sys.exit(main())
