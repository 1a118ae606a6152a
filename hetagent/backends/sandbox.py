"""Code nodes in a sandbox: a separate Python process with CPU-time, memory and wall-clock limits.

The child runs `python -I -S` (isolated: no user site, no PYTHON* variables, no site-packages) with an
environment scrubbed down to PATH/LANG/LC_ALL (the service's secrets, API keys and tokens never reach
it), in an empty temporary directory, with resource limits set in the child before exec:
RLIMIT_CPU (CPU seconds), RLIMIT_AS (address space) and RLIMIT_FSIZE/NOFILE kept small. The
wall-clock limit is enforced by the parent (the child's whole process group is killed).

Protocol: the code is a function body; it reads `data` (the JSON input) and sets `result` (anything
JSON-serializable). The child prints {"ok": true, "result": ...} or {"ok": false, "error": "..."}.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from hetagent.errors import HetagentError

_RUNNER = r"""
import json, sys
src = sys.argv[1]
data = json.loads(sys.stdin.read() or "null")
env = {"data": data, "result": None}
try:
    exec(compile(src, "<code node>", "exec"), env)
    out = {"ok": True, "result": env.get("result")}
except MemoryError:
    out = {"ok": False, "error": "memory limit exceeded"}
except BaseException as e:
    out = {"ok": False, "error": f"{type(e).__name__}: {e}"}
sys.stdout.write(json.dumps(out, default=str))
"""

SAFE_ENV_KEYS = ("PATH", "LANG", "LC_ALL")


class SandboxError(HetagentError):
    """A code node failed: it raised, ran out of time or memory, or printed garbage."""


class SandboxKilled(SandboxError):
    """The child was killed by a signal the sandbox did not send: not the code's fault."""


@dataclass
class Limits:
    cpu_seconds: float = 2.0
    memory_mb: int = 256
    wall_seconds: float = 5.0
    max_output_bytes: int = 1 << 20


@dataclass
class SandboxResult:
    result: object
    seconds: float


def scrubbed_env() -> dict[str, str]:
    return {k: os.environ[k] for k in SAFE_ENV_KEYS if k in os.environ}


def _limit(limits: Limits):
    def pre():
        import resource
        os.setsid()
        cpu = max(1, int(limits.cpu_seconds + 0.999))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        mem = int(limits.memory_mb) << 20
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
        resource.setrlimit(resource.RLIMIT_NOFILE, (32, 32))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return pre


def run_code(source: str, data=None, limits: Limits | None = None) -> SandboxResult:
    """Runs `source` in a limited child process; returns its `result` or raises SandboxError.

    Raises SandboxKilled (a SandboxError) when something outside the sandbox killed the child,
    e.g. Ray tearing down the worker that started it: the call may succeed elsewhere."""
    limits = limits or Limits()
    t = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hetagent-sbx-") as cwd:
        try:
            proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _RUNNER, source],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, cwd=cwd, env=scrubbed_env(),
                                    preexec_fn=_limit(limits), close_fds=True)
        except OSError as e:
            raise SandboxError(f"cannot start the sandbox: {e}") from None
        try:
            out = _exchange(proc, json.dumps(data, default=str).encode(), t + limits.wall_seconds,
                            limits.max_output_bytes)
            status, cpu = _reap(proc, t + limits.wall_seconds)
        except subprocess.TimeoutExpired:
            _kill(proc)
            raise SandboxError(f"code node exceeded its wall-clock limit of "
                               f"{limits.wall_seconds:g} s") from None
        except _TooMuchOutput:
            _kill(proc)
            raise SandboxError(f"code node printed more than {limits.max_output_bytes} bytes") \
                from None
        except BaseException:
            _kill(proc)
            raise
    seconds = time.perf_counter() - t
    if status in (-signal.SIGXCPU, -signal.SIGKILL) and not out:
        # The soft CPU limit sends SIGXCPU; SIGKILL is the hard limit (one second later) only if
        # the child really used that much CPU, otherwise someone else killed it.
        if status == -signal.SIGXCPU or cpu >= limits.cpu_seconds:
            raise SandboxError(f"code node exceeded its CPU-time limit of {limits.cpu_seconds:g} s")
        raise SandboxKilled(f"code node was killed from outside the sandbox (SIGKILL) after "
                            f"{seconds:.2f} s and {cpu:.2f} CPU s")
    try:
        doc = json.loads(out.decode() or "{}")
    except ValueError:
        raise SandboxError(f"code node ended without a result (exit status {status})") from None
    if not doc.get("ok"):
        raise SandboxError(f"code node failed: {doc.get('error', 'no result')}")
    return SandboxResult(doc.get("result"), seconds)


class _TooMuchOutput(Exception):
    pass


def _exchange(proc, data: bytes, deadline: float, max_out: int) -> bytes:
    """Writes `data` to the child's stdin and reads its stdout until EOF, the deadline, or more than
    `max_out` bytes (read no further, so a flood cannot fill the parent's memory)."""
    import selectors
    chunks, size, view = [], 0, memoryview(data)
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if view:
            sel.register(proc.stdin, selectors.EVENT_WRITE)
        else:
            proc.stdin.close()
        while sel.get_map():
            left = deadline - time.perf_counter()
            if left <= 0:
                raise subprocess.TimeoutExpired(proc.args, 0)
            for key, _ in sel.select(left):
                if key.fileobj is proc.stdin:
                    try:
                        view = view[os.write(proc.stdin.fileno(), view[:65536]):]
                    except BrokenPipeError:
                        view = view[:0]
                    if not view:
                        sel.unregister(proc.stdin)
                        proc.stdin.close()
                    continue
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    sel.unregister(proc.stdout)
                    continue
                chunks.append(chunk)
                size += len(chunk)
                if size > max_out:
                    raise _TooMuchOutput
    proc.stdout.close()
    return b"".join(chunks)


def _reap(proc, deadline: float) -> tuple[int, float]:
    """Waits for the child until the deadline; returns (Popen-style return code, CPU seconds it
    used), which Popen.wait cannot tell."""
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage.ru_utime + usage.ru_stime
        if time.perf_counter() > deadline:
            raise subprocess.TimeoutExpired(proc.args, 0)
        time.sleep(0.002)


def _kill(proc) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.wait()
    for f in (proc.stdin, proc.stdout):
        if f and not f.closed:
            f.close()


def standin_source(cpu_ms: float, output_bytes: int) -> str:
    """The code a `code` node runs when the workflow gives none: cpu_ms of work, output_bytes out."""
    return (f"import time\nt=time.process_time()\nx=0\n"
            f"while (time.process_time()-t)*1000 < {float(cpu_ms)!r}:\n    x+=1\n"
            f"text = str(data.get('text', '') if isinstance(data, dict) else '')\n"
            f"result = {{'text': text, 'blob': 'x' * {int(output_bytes)}}}\n")
