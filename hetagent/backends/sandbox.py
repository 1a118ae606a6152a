"""Code nodes in a sandbox: bubblewrap namespaces around a separate Python process, plus rlimits.

A code node's `source` defines `main(**inputs) -> dict` (as Dify's code nodes do). It runs in a
bubblewrap (`bwrap`) sandbox, never in the caller's process:

- **an unprivileged user**: run as root, hetagent starts bwrap privileged (no user namespace) and the
  trusted runner inside drops to a uid of its own (2^30 + the sandbox's host pid) with no groups and no
  capabilities; run as anyone else, bwrap maps the caller into a new user namespace with no capabilities.
- **no network**: a network namespace of its own (only an unconnected loopback).
- **a read-only view of only what the interpreter needs**: the interpreter binary, libpython, its standard
  library and the system libraries (/usr/lib), read-only; every site-packages / dist-packages folder in
  that view is covered by an empty tmpfs, so appending to `sys.path` finds nothing to import. No /etc,
  /home, /root, /usr/bin (no shell: `os.system` and `subprocess` have nothing to run) or working tree.
- **a private /tmp** (a size-limited tmpfs, the working directory) and a fresh /proc and /dev.
- **a process limit** (RLIMIT_NPROC, counted for the sandbox's own uid or user namespace).
- **a kill that reaches every descendant**: a PID namespace whose init is bwrap; when the runner ends, or
  the host kills bwrap (`--die-with-parent`), the kernel kills everything left inside, including
  grandchildren that called setsid(). Processes outside the namespace cannot even be named.

Inside, the runner forks the user code with RLIMIT_CPU, RLIMIT_AS, RLIMIT_FSIZE, RLIMIT_NOFILE, waits for
it, and reports its exit status and CPU time; the host enforces the wall clock and the output size.
Without bwrap, code nodes are refused (SandboxUnavailable, one line saying what to install): never run
with weaker isolation.
"""
from __future__ import annotations

import functools
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass

from hetagent.errors import HetagentError

INSTALL_HINT = ("install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install "
                "bubblewrap)")
SANDBOX_UID_BASE = 1 << 30      # root mode: the sandbox runs as uid SANDBOX_UID_BASE + bwrap's host pid
SAFE_ENV_KEYS = ("PATH", "LANG", "LC_ALL")

# The trusted runner: reads {"source", "inputs", "limits", "uid"} on stdin, drops privileges, forks the
# user code under rlimits, and writes one JSON header line ({"status", "cpu", "overflow"}) followed by
# the child's raw result document to its stdout.
_RUNNER = r"""
import inspect, json, os, resource, select, sys, time
req = json.loads(sys.stdin.buffer.read())
lim = req["limits"]
devnull = os.open("/dev/null", os.O_RDWR)
out = os.dup(1)
for fd in (0, 1, 2):
    os.dup2(devnull, fd)
uid = req["uid"]
if uid is not None:
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
else:
    import ctypes
    ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)   # PR_SET_DUMPABLE 0: the code cannot ptrace the runner
resource.setrlimit(resource.RLIMIT_NPROC, (lim["processes"] + 1, lim["processes"] + 1))
rfd, wfd = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(rfd)
    os.close(out)
    try:
        cpu = lim["cpu_seconds"]
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_AS, (lim["memory_bytes"], lim["memory_bytes"]))
        resource.setrlimit(resource.RLIMIT_FSIZE, (lim["file_bytes"], lim["file_bytes"]))
        resource.setrlimit(resource.RLIMIT_NOFILE, (32, 32))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        namespace = {"__name__": "__main__"}
        exec(compile(req["source"], "<code node>", "exec"), namespace)
        main = namespace.get("main")
        if not callable(main):
            raise TypeError("the source defines no function main(**inputs)")
        inputs = req["inputs"] if isinstance(req["inputs"], dict) else {}
        try:
            params = inspect.signature(main).parameters.values()
        except (TypeError, ValueError):
            params = ()
        if any(p.kind is p.VAR_KEYWORD for p in params):
            kwargs = dict(inputs)
        else:   # every named parameter: its input, else the upstream text (Dify's arg1, arg2, ...)
            kwargs = {p.name: inputs.get(p.name, inputs.get("text", "")) for p in params
                      if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                      and (p.name in inputs or p.default is p.empty)}
        result = main(**kwargs)
        if not isinstance(result, dict):
            raise TypeError(f"main() returned {type(result).__name__}, not a dict")
        doc = {"ok": True, "result": result}
    except MemoryError:
        doc = {"ok": False, "error": "memory limit exceeded"}
    except BaseException as e:
        doc = {"ok": False, "error": f"{type(e).__name__}: {e}"[:2000]}
    try:
        data = json.dumps(doc, default=str).encode()
    except BaseException as e:
        data = json.dumps({"ok": False, "error": f"result is not JSON: {type(e).__name__}"}).encode()
    view = memoryview(data)
    while view:
        view = view[os.write(wfd, view[:65536]):]
    os._exit(0)
os.close(wfd)
chunks, size, overflow, status = [], 0, False, None
os.set_blocking(rfd, False)
while True:
    ready, _, _ = select.select([rfd], [], [], 0.02)
    eof = False
    while True:
        try:
            chunk = os.read(rfd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            eof = True
            break
        chunks.append(chunk)
        size += len(chunk)
        if size > lim["output_bytes"]:
            overflow = True
            break
    if overflow:
        os.kill(pid, 9)
    if status is None:
        done, st, usage = os.wait4(pid, 0 if (eof or overflow) else os.WNOHANG)
        if done:
            status = (os.waitstatus_to_exitcode(st), usage.ru_utime + usage.ru_stime)
    if status is not None and (eof or overflow or not ready):
        break
head = json.dumps({"status": status[0], "cpu": status[1], "overflow": overflow}).encode() + b"\n"
body = b"" if overflow else b"".join(chunks)
view = memoryview(head + body)
while view:
    view = view[os.write(out, view):]
"""


class SandboxError(HetagentError):
    """A code node failed: it raised, ran out of time or memory, or printed garbage."""


class SandboxKilled(SandboxError):
    """The sandbox was killed by a signal hetagent did not send: not the code's fault."""


class SandboxUnavailable(SandboxError):
    """The isolation tool is missing or cannot create namespaces here: code nodes are refused."""


@dataclass
class Limits:
    cpu_seconds: float = 2.0
    memory_mb: int = 256
    wall_seconds: float = 5.0
    max_output_bytes: int = 1 << 20
    max_processes: int = 16        # processes and threads the code may have at once
    tmp_mb: int = 16               # size of its private /tmp
    file_bytes: int = 1 << 20      # largest file it may write (in /tmp)


@dataclass
class SandboxResult:
    result: object
    seconds: float
    cpu_seconds: float = 0.0     # the code's own CPU time (its process in the sandbox)


def scrubbed_env() -> dict[str, str]:
    return {k: os.environ[k] for k in SAFE_ENV_KEYS if k in os.environ}


def bwrap_path() -> str | None:
    return shutil.which("bwrap")


def require() -> str:
    """The bwrap executable, or SandboxUnavailable saying what to install."""
    path = bwrap_path()
    if path is None:
        raise SandboxUnavailable(f"code nodes run only in a bubblewrap sandbox and `bwrap` is not on "
                                 f"PATH: {INSTALL_HINT}")
    return path


@functools.lru_cache(maxsize=4)
def _interpreter_view(executable: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(paths bound read-only, folders hidden under an empty tmpfs) for running `executable`."""
    binds: list[str] = []
    for top in ("/usr/lib", "/usr/lib64", "/usr/lib32", "/lib", "/lib64", "/lib32"):
        if os.path.islink(top) or os.path.isdir(top):
            binds.append(top)
    paths = sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_exec_prefix})
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    soname = sysconfig.get_config_var("INSTSONAME") or ""
    extra = [executable, paths["stdlib"], paths["platstdlib"]]
    if sysconfig.get_config_var("Py_ENABLE_SHARED") and libdir and soname:
        extra.append(os.path.join(libdir, soname))
    for p in extra:
        p = os.path.realpath(p)
        if os.path.exists(p) and not any(p == b or p.startswith(b.rstrip("/") + "/") for b in binds):
            binds.append(p)
    hidden = set()
    for b in binds:
        if os.path.islink(b):
            continue
        for pattern in ("python3*/site-packages", "python3*/dist-packages", "site-packages",
                        "dist-packages"):
            hidden.update(p for p in glob.glob(os.path.join(b, pattern)) if os.path.isdir(p))
    for key in ("purelib", "platlib"):
        p = os.path.realpath(paths[key])
        if os.path.isdir(p):
            hidden.add(p)
    return tuple(binds), tuple(sorted(hidden))


def _mount_point_parents(binds) -> list[str]:
    """The folders bwrap creates to hold the bound paths (not inside any bound path), outermost first."""
    def inside(p):
        return any(p == b or p.startswith(b.rstrip("/") + "/") for b in binds)
    out = set()
    for b in binds:
        parent = os.path.dirname(b)
        while parent not in ("/", "") and not inside(parent):
            out.add(parent)
            parent = os.path.dirname(parent)
    return sorted(out, key=lambda p: (p.count("/"), p))


def _bwrap_args(bwrap: str, executable: str, limits: Limits, as_root: bool) -> list[str]:
    binds, hidden = _interpreter_view(executable)
    args = [bwrap]
    for b in binds:
        if os.path.islink(b):
            args += ["--symlink", os.readlink(b), b]
        else:
            args += ["--ro-bind", b, b]
    for h in hidden:
        args += ["--tmpfs", h, "--remount-ro", h]
    for folder in _mount_point_parents(binds):   # bwrap copies the host's modes (/root is 0700)
        args += ["--chmod", "0755", folder]
    args += ["--proc", "/proc", "--dev", "/dev",
             "--perms", "1777", "--size", str(int(limits.tmp_mb) << 20), "--tmpfs", "/tmp",
             "--chdir", "/tmp", "--clearenv", "--setenv", "HOME", "/tmp", "--setenv", "LANG", "C.UTF-8",
             "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
             "--hostname", "sandbox", "--new-session", "--die-with-parent", "--cap-drop", "ALL"]
    if as_root:   # privileged bwrap: the runner needs these two to drop to its own uid, then has none
        args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        args += ["--unshare-user", "--disable-userns", "--uid", "65534", "--gid", "65534"]
    return args + ["--", executable, "-I", "-S", "-B", "-c", _RUNNER]


def run_code(source: str, inputs: dict | None = None, limits: Limits | None = None) -> SandboxResult:
    """Runs `source` (defining `main(**inputs) -> dict`) in the sandbox; returns main's result.

    Raises SandboxError when the code fails or breaks a limit, SandboxKilled when something outside
    killed the sandbox (e.g. Ray tearing down the worker that started it: the call may succeed
    elsewhere), SandboxUnavailable when bubblewrap is missing or cannot create namespaces."""
    limits = limits or Limits()
    bwrap = require()
    executable = os.path.realpath(sys.executable)
    as_root = os.geteuid() == 0
    t = time.perf_counter()
    deadline = t + limits.wall_seconds
    try:
        proc = subprocess.Popen(_bwrap_args(bwrap, executable, limits, as_root), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=scrubbed_env(),
                                close_fds=True, start_new_session=True)
    except OSError as e:
        raise SandboxUnavailable(f"cannot start bubblewrap: {e.strerror}; {INSTALL_HINT}") from None
    request = {"source": source, "inputs": inputs if inputs is not None else {},
               "uid": SANDBOX_UID_BASE + proc.pid if as_root else None,
               "limits": {"cpu_seconds": max(1, int(limits.cpu_seconds + 0.999)),
                          "memory_bytes": int(limits.memory_mb) << 20,
                          "file_bytes": int(limits.file_bytes), "processes": int(limits.max_processes),
                          "output_bytes": int(limits.max_output_bytes)}}
    try:
        out, err = _exchange(proc, json.dumps(request, default=str).encode(), deadline,
                             limits.max_output_bytes + 4096)
        status = _reap(proc, deadline)
    except subprocess.TimeoutExpired:
        _kill(proc)
        raise SandboxError(f"code node exceeded its wall-clock limit of {limits.wall_seconds:g} s") \
            from None
    except _TooMuchOutput:
        _kill(proc)
        raise SandboxError(f"code node printed more than {limits.max_output_bytes} bytes") from None
    except BaseException:
        _kill(proc)
        raise
    seconds = time.perf_counter() - t
    head, _, body = out.partition(b"\n")
    try:
        header = json.loads(head.decode()) if head else None
    except ValueError:
        header = None
    if not isinstance(header, dict):
        if status == -signal.SIGKILL:
            raise SandboxKilled(f"the code node's sandbox was killed from outside (SIGKILL) after "
                                f"{seconds:.2f} s")
        reason = err.decode(errors="replace").strip().splitlines()
        if status != 0 and reason and reason[0].startswith("bwrap:"):
            raise SandboxUnavailable(f"bubblewrap cannot create the sandbox here ({reason[0]}); code "
                                     f"nodes need user or PID namespaces")
        raise SandboxError(f"code node ended without a result (sandbox exit status {status})")
    return _result(header, body, limits, seconds)


def _result(header: dict, body: bytes, limits: Limits, seconds: float) -> SandboxResult:
    code_status, cpu = header.get("status"), float(header.get("cpu") or 0.0)
    if header.get("overflow"):
        raise SandboxError(f"code node printed more than {limits.max_output_bytes} bytes")
    if code_status in (-signal.SIGXCPU, -signal.SIGKILL) and (code_status == -signal.SIGXCPU
                                                                or cpu >= limits.cpu_seconds):
        raise SandboxError(f"code node exceeded its CPU-time limit of {limits.cpu_seconds:g} s")
    try:
        doc = json.loads(body.decode() or "null")
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        how = (f"killed by signal {signal.Signals(-code_status).name}"
               if isinstance(code_status, int) and code_status < 0 and -code_status in
               signal.valid_signals() else f"exit status {code_status}")
        raise SandboxError(f"code node ended without a result ({how})")
    if not doc.get("ok"):
        raise SandboxError(f"code node failed: {str(doc.get('error', 'no result'))[:500]}")
    return SandboxResult(doc.get("result"), seconds, cpu)


class _TooMuchOutput(Exception):
    pass


def _exchange(proc, data: bytes, deadline: float, max_out: int) -> tuple[bytes, bytes]:
    """Writes `data` to the sandbox's stdin and reads its stdout and stderr until EOF, the deadline,
    or more than `max_out` bytes (read no further, so a flood cannot fill the host's memory)."""
    import selectors
    out, err, view = [], [], memoryview(data)
    size = {proc.stdout: 0, proc.stderr: 0}
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        sel.register(proc.stderr, selectors.EVENT_READ)
        sel.register(proc.stdin, selectors.EVENT_WRITE)
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
                chunk = os.read(key.fileobj.fileno(), 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                size[key.fileobj] += len(chunk)
                if key.fileobj is proc.stdout:
                    out.append(chunk)
                    if size[proc.stdout] > max_out:
                        raise _TooMuchOutput
                elif size[proc.stderr] <= 4096:
                    err.append(chunk)
    proc.stdout.close()
    proc.stderr.close()
    return b"".join(out), b"".join(err)


def _reap(proc, deadline: float) -> int:
    """Waits for bwrap until the deadline; returns its Popen-style return code."""
    while True:
        pid, status = os.waitpid(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode
        if time.perf_counter() > deadline:
            raise subprocess.TimeoutExpired(proc.args, 0)
        time.sleep(0.002)


def _kill(proc) -> None:
    """SIGKILL to bwrap's process group: bwrap dies, its init in the PID namespace gets SIGKILL
    (--die-with-parent), and the kernel kills everything else inside."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.wait()
    for f in (proc.stdin, proc.stdout, proc.stderr):
        if f and not f.closed:
            f.close()


def standin_source(cpu_ms: float, output_bytes: int) -> str:
    """The code a `code` node runs when the workflow gives none: cpu_ms of work, output_bytes out."""
    return (f"import time\n\n"
            f"def main(text='', **_):\n"
            f"    t = time.process_time()\n"
            f"    x = 0\n"
            f"    while (time.process_time() - t) * 1000 < {float(cpu_ms)!r}:\n"
            f"        x += 1\n"
            f"    return {{'text': str(text), 'blob': 'x' * {int(output_bytes)}}}\n")
