"""The batch-1 decode step's matrix-vector products, by a small kernel of our own (``matvec.c``).

A decode step of one sequence multiplies one row by every weight matrix once, so it runs at the
speed the memory streams the weights. oneDNN's GEMM reads the 1 x 896 x 896 products of a
Qwen2.5-0.5B-sized layer at 20-25 GB/s on this project's 2-core machines, where a plain loop over
four rows at a time reads them at ~30 (the speed of the machine's best 2 GB read), and it costs
oneDNN a packed copy of every bfloat16 matrix (twice the model in memory) to get even that far.

The kernel is compiled on first use for the host's own instruction set (``cc -O3 -march=native
-fopenmp``) into ``$TATLAS_CACHE/kernels`` (default ``~/.cache/tatlas``), named by a hash of the
source, the compiler and the CPU's flags, so a changed source, compiler or machine builds afresh;
it is loaded with ctypes and shares torch's OpenMP runtime (the same ``libgomp``) and thread count.
Where there is no C compiler, no AVX2, or the build fails, :func:`kernel` is ``None`` and callers
keep their GEMM (one log line says why). A freshly loaded kernel is checked against ``F.linear``
once before it is used. ``TATLAS_MATVEC=0`` turns it off. The same library holds the one-call decode
layer of :mod:`~tatlas.nn.decode_layer` and the one-row products of GGUF's 4- and 8-bit blocks
(:func:`matvec_blocks`, float32, for :mod:`~tatlas.nn.quant_blocks`).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from ..io.parts import cache_dir

__all__ = ["MAX_ROWS", "build", "kernel", "matmat", "matvec", "blocks_valid", "matvec_blocks", "rows_at_once",
           "serves", "serves_blocks", "serves_rows"]

log = logging.getLogger(__name__)
SOURCE = Path(__file__).with_name("matvec.c")
FLAGS = ("-O3", "-march=native", "-fopenmp", "-fPIC", "-shared")
LIBS = ("-lm",)  # after the source: linkers that drop unneeded libraries look at them in order
# below this many weight bytes one thread is faster: the second thread's wake-up costs more than
# its half of the read (measured: a 384 x 384 float32 matrix, 2-3 us on one thread)
ONE_THREAD_BYTES = 1 << 18


@functools.lru_cache(maxsize=1)
def cpu_signature() -> str:
    """This CPU as /proc/cpuinfo's first processor names it (vendor, family, model, model name and
    feature flags), or the platform's names where there is no /proc/cpuinfo: what a kernel built
    with ``-march=native`` (:func:`build`) or a timing kept on disk (``fastpath.race_file``) is for."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip() and fields:
                    break  # the end of the first processor's block
                name, _, value = line.partition(":")
                if name.strip() in ("vendor_id", "cpu family", "model", "model name", "flags", "Features"):
                    fields.setdefault(name.strip(), value.strip())
    except OSError:
        pass
    return "|".join(f"{k}={v}" for k, v in sorted(fields.items())) or f"{platform.machine()}|{platform.processor()}"


def _compiler() -> str | None:
    cc = os.environ.get("CC")
    return cc if cc and shutil.which(cc) else (shutil.which("cc") or shutil.which("gcc"))


def build(flags: tuple[str, ...] = FLAGS, directory: Path | None = None) -> Path:
    """Compile ``matvec.c`` with ``flags`` into ``directory`` (default: the cache), unless a build
    of the same source, compiler, flags and CPU is there already; the shared library's path.
    Raises ``RuntimeError`` (one line) when there is no compiler or the build fails."""
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler (cc, gcc or $CC) on PATH")
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    key = hashlib.sha256("\0".join([SOURCE.read_text(), version, *flags, *LIBS, cpu_signature()]).encode()).hexdigest()[:16]
    directory = Path(directory) if directory is not None else cache_dir() / "kernels"
    target = directory / f"matvec-{key}.so"
    if target.exists():
        return target
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory) as tmp:  # built beside the target, then renamed: atomic
        out = Path(tmp) / target.name
        done = subprocess.run([cc, *flags, str(SOURCE), "-o", str(out), *LIBS], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{cc} failed on {SOURCE.name}: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
        os.replace(out, target)
    return target


def load(path: Path) -> ctypes.CDLL | None:
    """The kernel library at ``path`` with its argument types, or ``None`` when it was built for no
    vector instruction set (the machine has neither AVX2 nor AVX-512)."""
    lib = ctypes.CDLL(str(path))
    lib.tatlas_matvec_isa.restype = ctypes.c_int
    if lib.tatlas_matvec_isa() == 0:
        return None
    args = [ctypes.c_void_p] * 4 + [ctypes.c_int64, ctypes.c_int64, ctypes.c_int]
    for fn, result in ((lib.tatlas_matvec_f32, None), (lib.tatlas_matvec_bf16, ctypes.c_int)):
        fn.argtypes, fn.restype = args, result
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    lib.tatlas_matmat.argtypes, lib.tatlas_matmat.restype = [p] * 4 + [i64, i64, i64, i32, i32], ctypes.c_int
    lib.tatlas_matvec_q4.argtypes, lib.tatlas_matvec_q4.restype = [p] * 6 + [i64, i64, i32], ctypes.c_int
    lib.tatlas_matvec_q8.argtypes, lib.tatlas_matvec_q8.restype = [p] * 5 + [i64, i64, i32], ctypes.c_int
    step = [i64, i64, p, p, i64, i64, i32, p, i64, p, p, i64, i32]  # S, pos, cos, sin, ldcos, R, ..., threads
    lib.tatlas_decode_layer.argtypes = [p, i64] + [p] * 4 + step
    lib.tatlas_decode_layer.restype = ctypes.c_int
    lib.tatlas_decode_layers.argtypes = [p, i64, i64] + [p] * 4 + step
    lib.tatlas_decode_layers.restype = ctypes.c_int
    return lib


def _agrees(lib: ctypes.CDLL) -> bool:
    """One product per dtype (a bias, a ragged row count and length) equal to ``F.linear``'s."""
    g = torch.Generator().manual_seed(0)
    w, x, b = torch.randn(7, 37, generator=g), torch.randn(1, 37, generator=g), torch.randn(7, generator=g)
    for dtype, atol in ((torch.float32, 1e-4), (torch.bfloat16, 0.1)):
        wd, xd, bd = w.to(dtype), x.to(dtype), b.to(dtype)
        got = _call(lib, xd, wd, bd, 1)
        if not torch.allclose(got.float(), F.linear(xd.float(), wd.float(), bd.float()), atol=atol, rtol=0.02):
            return False
        rows = torch.cat([xd, xd * 2, -xd])  # several rows at once (tatlas_matmat: AVX-512 only, else -1)
        got = torch.empty(3, 7, dtype=dtype)
        if lib.tatlas_matmat(wd.data_ptr(), rows.data_ptr(), bd.data_ptr(), got.data_ptr(), 3, 7, 37,
                             int(dtype == torch.bfloat16), 1) == 0 and not torch.allclose(
                got.float(), F.linear(rows.float(), wd.float(), bd.float()), atol=2 * atol, rtol=0.02):
            return False
    # GGUF's blocks (two 32-value groups a row): q4 (w = q * scale + offset) and q8 (w = q * scale)
    x, scale, offset = torch.randn(64, generator=g), torch.rand(7, 2, generator=g), torch.randn(7, 2, generator=g)
    q4 = torch.randint(0, 16, (7, 2, 32), generator=g, dtype=torch.uint8)
    q8 = torch.randint(-127, 128, (7, 64), generator=g, dtype=torch.int8)
    y, per_value = torch.empty(7), lambda t: t.repeat_interleave(32, 1)
    packed = (q4[:, :, :16] | (q4[:, :, 16:] << 4)).contiguous()  # named: it must outlive the call
    lib.tatlas_matvec_q4(packed.data_ptr(), scale.data_ptr(), offset.data_ptr(), x.data_ptr(), None, y.data_ptr(),
                         7, 64, 1)
    if not torch.allclose(y, (q4.flatten(1) * per_value(scale) + per_value(offset)) @ x, atol=1e-3, rtol=1e-4):
        return False
    lib.tatlas_matvec_q8(q8.data_ptr(), scale.data_ptr(), x.data_ptr(), None, y.data_ptr(), 7, 64, 1)
    return torch.allclose(y, (q8 * per_value(scale)) @ x, atol=1e-3, rtol=1e-4)


@functools.lru_cache(maxsize=1)
def kernel() -> ctypes.CDLL | None:
    """The compiled kernel, built and checked on first call; ``None`` where it cannot serve."""
    if os.environ.get("TATLAS_MATVEC", "1").strip().lower() in ("0", "off", "false", "no"):
        return None
    if platform.machine().lower() not in ("x86_64", "amd64"):
        log.info("matvec kernel: not built on %s; decode keeps oneDNN/BLAS", platform.machine())
        return None
    try:
        lib = load(build())
    except (RuntimeError, OSError, subprocess.SubprocessError) as err:
        log.info("matvec kernel unavailable (%s); decode keeps oneDNN/BLAS", err)
        return None
    if lib is not None and not _agrees(lib):
        log.warning("matvec kernel disagrees with F.linear on this machine; not used")
        return None
    return lib


def serves(x: Tensor, weight: Tensor, bias: Tensor | None) -> bool:
    """Whether :func:`matvec` computes ``F.linear(x, weight, bias)``: one row, plain contiguous
    CPU float32 or bfloat16 tensors of one dtype, no gradient wanted, and the kernel at hand."""
    return (
        x.numel() == weight.shape[-1] and weight.dim() == 2 and x.dtype == weight.dtype
        and x.dtype in (torch.float32, torch.bfloat16) and weight.device.type == "cpu" and x.device.type == "cpu"
        and weight.is_contiguous() and (bias is None or (bias.dtype == x.dtype and bias.is_contiguous()))
        and not (torch.is_grad_enabled() and (weight.requires_grad or x.requires_grad))
        and not torch.compiler.is_compiling() and kernel() is not None
    )


def _call(lib: ctypes.CDLL, x: Tensor, weight: Tensor, bias: Tensor | None, threads: int) -> Tensor:
    x = x.contiguous()
    n, k = weight.shape
    y = torch.empty((*x.shape[:-1], n), dtype=x.dtype)
    fn = lib.tatlas_matvec_f32 if x.dtype == torch.float32 else lib.tatlas_matvec_bf16
    if fn(weight.data_ptr(), x.data_ptr(), None if bias is None else bias.data_ptr(), y.data_ptr(), n, k, threads):
        raise MemoryError(f"matvec kernel: no memory for a float32 copy of a {k}-element bfloat16 row")
    return y


def matvec(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear(x, weight, bias)`` for one row ``x`` (any leading shape of one element), by the
    kernel; call only where :func:`serves` said yes."""
    small = weight.numel() * weight.element_size() < ONE_THREAD_BYTES
    return _call(kernel(), x, weight, bias, 1 if small else torch.get_num_threads())


# A product of a few rows (a decode step of several sequences) can take tatlas_matmat, which reads
# each weight row once for all of them: from memory, Whisper's 51865 x 384 float32 head at 2-8 rows
# in 2.3-3.7 ms against oneDNN's 4.9-5.7 (Zen 4 EPYC, 2 threads); at 16 rows oneDNN is ahead (7.1
# vs 8.7). Callers race it against their GEMM (nn/fastpath.py) up to this many rows.
MAX_ROWS = 16


def rows_at_once() -> bool:
    """Whether the kernel reads each weight row once for several rows of x (``tatlas_matmat``'s
    loop: AVX-512); elsewhere ``matvec.c`` takes several rows one after the other, reading the
    weights once per row, which callers leave to a GEMM."""
    lib = kernel()
    return lib is not None and lib.tatlas_matvec_isa() >= 2


def serves_rows(x: Tensor, weight: Tensor, bias: Tensor | None) -> bool:
    """Whether :func:`matmat` computes ``F.linear(x, weight, bias)``: 2 to :data:`MAX_ROWS` rows
    of plain contiguous CPU float32 or bfloat16 tensors of one dtype, no gradient wanted, the
    kernel at hand with AVX-512."""
    k = weight.shape[-1]
    return (
        weight.dim() == 2 and x.shape[-1] == k and 2 <= x.numel() // k <= MAX_ROWS and x.dtype == weight.dtype
        and x.dtype in (torch.float32, torch.bfloat16) and weight.device.type == "cpu" and x.device.type == "cpu"
        and weight.is_contiguous() and (bias is None or (bias.dtype == x.dtype and bias.is_contiguous()))
        and not (torch.is_grad_enabled() and (weight.requires_grad or x.requires_grad))
        and not torch.compiler.is_compiling() and rows_at_once()
    )


def matmat(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear(x, weight, bias)`` for a few rows by the kernel (each weight row read once for
    all of them); call only where :func:`serves_rows` said yes."""
    x = x.contiguous()
    n, k = weight.shape
    y = torch.empty((*x.shape[:-1], n), dtype=x.dtype)
    if kernel().tatlas_matmat(weight.data_ptr(), x.data_ptr(), None if bias is None else bias.data_ptr(),
                              y.data_ptr(), x.numel() // k, n, k, int(x.dtype == torch.bfloat16),
                              torch.get_num_threads()):
        raise RuntimeError("matvec kernel: tatlas_matmat needs AVX-512")
    return y


def serves_blocks(x: Tensor, blocks: tuple[Tensor, ...]) -> bool:
    """Whether :func:`matvec_blocks` computes a one-row product of these 4- or 8-bit blocks
    (``(data, scales[, offsets])`` as :class:`~tatlas.nn.quant_blocks.Int4Linear` keeps them): one
    float32 row, no gradient wanted, the kernel at hand."""
    return (x.numel() == blocks[1].shape[-1] * 32 and x.dtype == torch.float32 and x.device.type == "cpu"
            and blocks_valid(blocks)
            and not (torch.is_grad_enabled() and x.requires_grad) and not torch.compiler.is_compiling()
            and kernel() is not None)


def blocks_valid(blocks: tuple[Tensor, ...]) -> bool:
    """Whether ``blocks`` are what ``matvec.c`` reads: contiguous CPU q4 bytes (uint8 ``[N, K/2]``)
    with float32 scales and offsets ``[N, K/32]``, or q8 (int8 ``[N, K]``) with float32 scales."""
    data, scales = blocks[0], blocks[1]
    n, groups = scales.shape
    want = (torch.uint8, (n, groups * 16)) if len(blocks) == 3 else (torch.int8, (n, groups * 32))
    return ((data.dtype, tuple(data.shape)) == want and all(
        t.dtype == torch.float32 and t.shape == scales.shape for t in blocks[1:])
        and all(t.device.type == "cpu" and t.is_contiguous() for t in blocks))


def matvec_blocks(x: Tensor, blocks: tuple[Tensor, ...], bias: Tensor | None = None) -> Tensor:
    """``x W^T (+ bias)`` for one float32 row ``x`` and the blocks of ``W`` (``(q4 bytes [N, K/2],
    scales [N, K/32], offsets [N, K/32])`` or ``(q8 [N, K], scales [N, K/32])``; see ``matvec.c``),
    computed in float32; call only where :func:`serves_blocks` said yes."""
    data, scales = blocks[0], blocks[1]
    n, k = scales.shape[0], scales.shape[1] * 32
    x = x.contiguous()
    y = torch.empty((*x.shape[:-1], n), dtype=torch.float32)
    small = data.numel() < ONE_THREAD_BYTES
    threads = 1 if small else torch.get_num_threads()
    b = None if bias is None else bias.float().contiguous()
    lib = kernel()
    if len(blocks) == 3:
        failed = lib.tatlas_matvec_q4(data.data_ptr(), scales.data_ptr(), blocks[2].data_ptr(), x.data_ptr(),
                                      None if b is None else b.data_ptr(), y.data_ptr(), n, k, threads)
    else:
        failed = lib.tatlas_matvec_q8(data.data_ptr(), scales.data_ptr(), x.data_ptr(),
                                      None if b is None else b.data_ptr(), y.data_ptr(), n, k, threads)
    if failed:
        raise MemoryError(f"matvec kernel: no memory for the group sums of a {k}-element row")
    return y
