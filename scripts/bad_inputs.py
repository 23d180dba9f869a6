"""The bad-input table of docs/reliability.md (issue #22): one bad input of each class, given to the
real ``tatlas`` command (a subprocess) or to the server's API, and what came back.

    python scripts/bad_inputs.py            # every row; rewrites the table in docs/reliability.md
    python scripts/bad_inputs.py --fast     # the quick rows only (tests/test_bad_inputs.py runs these)
    python scripts/bad_inputs.py --no-write # print the table, leave the docs alone

A row is ``ok`` when the input is refused as the CLI promises: exit status 2 and one line on stderr
starting ``error:``, no traceback (the server: a 4xx with a one-line JSON error and the server still
serving). A row whose input is acceptable by design says what is expected instead (a truncated WAV is
transcribed with a one-line warning). The table sits between the markers below, so a rerun
replaces it and the page stays true.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reliability.md"
START, END = "<!-- bad-inputs:start -->", "<!-- bad-inputs:end -->"


@dataclass(frozen=True)
class Row:
    name: str
    args: Callable[[Path], list[str]]  # the tatlas arguments, with the bad input made under the folder given
    fast: bool = False
    expect: str = "refused"  # "refused": exit 2 and one `error:` line; "warned": exit 0 and a warning on stderr


# --------------------------------------------------------------------------- the inputs


def _models(work: Path) -> dict[str, Path]:
    """Tiny random checkpoints the rows point at (made once per run)."""
    import torch

    import tatlas

    out = {}
    torch.manual_seed(0)
    for name, system, kw in (("llm", "llm", {}), ("clip", "clip", {}), ("dt", "decision_transformer", {}),
                             ("evo", "evoformer", {}),
                             ("whisper", "whisper", dict(audio_dim=16, text_dim=16, audio_heads=2, text_heads=2,
                                                         audio_layers=1, text_layers=1, text_ctx=16, alignment_heads=None))):
        path = work / f"{name}.safetensors"
        if not path.is_file():
            tatlas.save(tatlas.create(system, "tiny", **kw), path)
        out[name] = path
    return out


def _write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def _wav(samples, rate: int = 16000, subtype: str = "PCM_16") -> bytes:
    import soundfile

    buf = io.BytesIO()
    soundfile.write(buf, samples, rate, format="WAV", subtype=subtype)
    return buf.getvalue()


def _tone(seconds: float = 1.0):
    import numpy as np

    t = np.arange(int(16000 * seconds)) / 16000
    return (0.3 * np.sin(2 * math.pi * 440 * t)).astype("float32")


def _png(width: int, height: int, idat: bytes = b"") -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def _bomb() -> bytes:
    """12000 x 12000 RGB zeros (432 MB decoded) in a file of about 0.4 MB."""
    z = zlib.compressobj(9)
    row = b"\0" * (1 + 3 * 12000)
    data = b"".join(z.compress(row) for _ in range(12000)) + z.flush()
    return _png(12000, 12000, data)


def _photo(work: Path) -> Path:
    from PIL import Image

    path = work / "photo.png"
    if not path.is_file():
        Image.new("RGB", (32, 32), (200, 30, 30)).save(path)
    return path


def _lying_safetensors(work: Path) -> Path:
    header = json.dumps({"embed.weight": {"dtype": "F32", "shape": [2**40, 1024], "data_offsets": [0, 16]},
                         "__metadata__": {"tatlas.system": "llm", "tatlas.config": "{}"}}).encode()
    return _write(work / "lying.safetensors", struct.pack("<Q", len(header)) + header + b"\0" * 16)


def _evil_pickle(work: Path) -> Path:
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(work / "pwned.txt"),))

    return _write(work / "evil.pt", pickle.dumps({"state_dict": Evil()}))


def _wrong_dtype(work: Path, models: dict[str, Path]) -> Path:
    from safetensors.torch import load_file, save_file

    from tatlas.io import read_checkpoint

    _, _, _, meta = read_checkpoint(models["llm"])
    state = load_file(str(models["llm"]))
    name = next(k for k in state if k.endswith("norm.weight") or k.endswith("weight"))
    state[name] = state[name].to("cpu").round().to(__import__("torch").int32)
    path = work / "wrong-dtype.safetensors"
    save_file(state, str(path), metadata=meta)
    return path


def _hf_folder(work: Path, name: str, config_text: str) -> Path:
    import tatlas
    from tatlas.models.llm.convert import to_hf

    folder = work / name
    to_hf(tatlas.create("llm", "tiny"), folder)
    (folder / "config.json").write_text(config_text)
    return folder


def _bad_config(work: Path) -> Path:
    import tatlas
    from tatlas.models.llm.convert import to_hf

    folder = to_hf(tatlas.create("llm", "tiny"), work / "typed")
    config = json.loads((folder / "config.json").read_text())
    config["hidden_size"] = "sixty-four"
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _gguf_truncated(work: Path) -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    from test_gguf import _write as write_gguf

    path = write_gguf(work / "full.gguf", "llama", dim=32, layers=1, heads=2, kv_heads=1, hidden=64)
    raw = path.read_bytes()
    return _write(work / "torn.gguf", raw[: len(raw) // 3])


def _rows() -> list[Row]:
    m: dict[str, Path] = {}

    def models(work: Path) -> dict[str, Path]:
        if not m:
            m.update(_models(work))
        return m

    def gen(work: Path, *extra: str) -> list[str]:
        return ["generate", "--model", str(models(work)["llm"]), "--prompt", "hi", "--max-new-tokens", "2", *extra]

    def whisper(work: Path, audio: Path) -> list[str]:
        return ["transcribe", str(audio), "--model", str(models(work)["whisper"]), "--no-progress"]

    def clip(work: Path, image: Path, *extra: str, model: Path | None = None) -> list[str]:
        return ["clip", "zero-shot", str(image), "--labels", "cat,dog", "--model", str(model or models(work)["clip"]),
                *extra]

    return [
        Row("missing file", lambda w: whisper(w, w / "no-such.wav"), fast=True),
        Row("empty file", lambda w: whisper(w, _write(w / "empty.wav", b"")), fast=True),
        Row("corrupt audio", lambda w: whisper(w, _write(w / "noise.wav", b"RIFF\x10\x00\x00\x00WAVEjunk" + os.urandom(64)))),
        Row("NaN audio", lambda w: whisper(w, _write(w / "nan.wav", _wav(_tone() * float("nan"), subtype="FLOAT")))),
        Row("truncated WAV (header cut)", lambda w: whisper(w, _write(w / "cut.wav", _wav(_tone())[:30]))),
        Row("truncated WAV (data cut: transcribed, warned)", lambda w: whisper(
            w, _write(w / "short.wav", _wav(_tone())[: 44 + 8000])), expect="warned"),
        Row("huge-declared image (20000x20000 header)", lambda w: clip(w, _write(w / "huge.png", _png(20000, 20000))),
            fast=True),
        Row("image bomb (432 MB of zeros in 0.4 MB)", lambda w: clip(w, _write(w / "bomb.png", _bomb()))),
        Row("text file named .png", lambda w: clip(w, _write(w / "notes.png", "just some text\n"))),
        Row("safetensors with lying header (2^40 x 1024)", lambda w: ["generate", "--model", str(_lying_safetensors(w)),
                                                                      "--prompt", "hi"], fast=True),
        Row("evil pickle (os.system in a .pt)", lambda w: clip(w, _photo(w), "--format", "openai-clip",
                                                               model=_evil_pickle(w))),
        Row("checkpoint of another system", lambda w: ["generate", "--model", str(models(w)["dt"]), "--prompt", "hi"]),
        Row("wrong-dtype tensor (int32 weight)", lambda w: ["generate", "--model", str(_wrong_dtype(w, models(w))),
                                                            "--prompt", "hi"]),
        Row("non-JSON config.json", lambda w: ["generate", "--model", str(_hf_folder(w, "nonjson", "{not json")),
                                               "--prompt", "hi"]),
        Row("wrong-typed config value (hidden_size: str)", lambda w: ["generate", "--model", str(_bad_config(w)),
                                                                      "--prompt", "hi"]),
        Row("torn checkpoint (half the file)", lambda w: ["generate", "--model", str(_write(
            w / "torn.safetensors", models(w)["llm"].read_bytes()[: models(w)["llm"].stat().st_size // 2])),
            "--prompt", "hi"]),
        Row("GGUF truncated", lambda w: ["generate", "--model", str(_gguf_truncated(w)), "--prompt", "hi"]),
        Row("--beams 100000", lambda w: gen(w, "--beams", "100000"), fast=True),
        Row("--temperature nan", lambda w: gen(w, "--temperature", "nan"), fast=True),
        Row("--max-new-tokens -5", lambda w: gen(w, "--max-new-tokens", "-5")),
        Row("--top -1", lambda w: clip(w, _photo(w), "--top", "-1"), fast=True),
        Row("text file named .npz", lambda w: ["dt", "info", str(_write(w / "fake.npz", "episode,reward\n1,2\n"))],
            fast=True),
        Row("MSA garbage", lambda w: ["fold", str(_write(w / "garbage.a3m", ">q\nMK\x00LV\n>s\n12\n")),
                                      "--model", str(models(w)["evo"]), "--out", str(w / "fold")]),
        Row("MSA not UTF-8", lambda w: ["fold", str(_write(w / "binary.a3m", b"\xff\xfe>q\nMKV\n")),
                                        "--model", str(models(w)["evo"]), "--out", str(w / "fold2")]),
    ]


# --------------------------------------------------------------------------- running them


@dataclass
class Result:
    name: str
    command: str
    status: int
    message: str
    ok: bool


def _one_line(stderr: str) -> tuple[str, bool]:
    lines = [line for line in stderr.splitlines() if line.strip()]
    first = lines[0] if lines else ""
    return (first if len(lines) <= 1 else f"{first} (+{len(lines) - 1} more lines)"), len(lines) == 1


def run_row(row: Row, work: Path, timeout: float = 300) -> Result:
    args = row.args(work)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TATLAS_CACHE": str(work / "cache")}
    env.pop("TATLAS_DEBUG", None)
    shown = "tatlas " + " ".join(a.replace(str(work) + "/", "") for a in args)
    try:
        proc = subprocess.run([sys.executable, "-m", "tatlas.cli.main", *args], capture_output=True, text=True,
                              timeout=timeout, env=env, cwd=work)
    except subprocess.TimeoutExpired:
        return Result(row.name, shown, -1, f"no answer in {timeout:.0f} s (a hang)", False)
    message, single = _one_line(proc.stderr)
    if row.expect == "warned":
        ok = proc.returncode == 0 and single and "Traceback" not in proc.stderr
    else:
        ok = proc.returncode == 2 and single and message.startswith("error:") and "Traceback" not in proc.stderr
    if (work / "pwned.txt").exists():
        ok, message = False, "the pickle ran code: " + message
    return Result(row.name, shown, proc.returncode, message.replace(str(work) + "/", ""), ok)


def server_row(work: Path) -> Result:
    """A chat request whose body is not JSON, then a valid one: 400 with one JSON line, then 200."""
    from fastapi.testclient import TestClient

    from tatlas.serve import Limits, ModelSpec, ServeConfig, create_app

    models = _models(work)
    config = ServeConfig(models=(ModelSpec(name="chat", spec=str(models["llm"])),), limits=Limits(max_tokens=2))
    shown = "POST /v1/chat/completions '{\"model\": \"chat\", \"messages\": [' (body cut)"
    with TestClient(create_app(config)) as client:
        bad = client.post("/v1/chat/completions", content=b'{"model": "chat", "messages": [',
                          headers={"content-type": "application/json"})
        good = client.post("/v1/chat/completions", json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]})
    try:
        message = bad.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = bad.text[:200]
    ok = bad.status_code == 400 and "\n" not in message and good.status_code == 200
    return Result("server: malformed JSON body", shown, bad.status_code, message, ok)


def table(results: list[Result]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| input class | command | exit status | message | ok |", "|---|---|---|---|---|"]
    lines += [f"| {cell(r.name)} | `{cell(r.command)}` | {r.status} | {cell(r.message)} | {'ok' if r.ok else 'FAIL'} |"
              for r in results]
    return "\n".join(lines)


def write_doc(text: str, command: str) -> None:
    block = f"{START}\n<!-- made by `{command}`; rerun it to refresh -->\n\n{text}\n\n{END}"
    doc = DOC.read_text() if DOC.is_file() else ""
    if START in doc and END in doc:
        doc = doc[: doc.index(START)] + block + doc[doc.index(END) + len(END):]
    else:
        doc = doc.rstrip() + "\n\n" + block + "\n"
    DOC.write_text(doc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="only the quick rows")
    parser.add_argument("--no-write", action="store_true", help="print the table; leave docs/reliability.md alone")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        results = [run_row(row, work) for row in _rows() if row.fast or not args.fast]
        if not args.fast:
            results.append(server_row(work))
    text = table(results)
    print(text)
    if not args.no_write:
        write_doc(text, "python scripts/bad_inputs.py")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
