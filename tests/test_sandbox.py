"""The code-node sandbox (bubblewrap): results, limits, and the escapes issue 14 found, each of which must
now fail. Every escape is tried for real by code running inside the sandbox; the host checks the effect."""
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import uuid

import pytest

from hetagent.backends import sandbox

pytestmark = pytest.mark.skipif(sandbox.bwrap_path() is None,
                                reason="bubblewrap is not installed (the README's test command installs it)")


def run(source: str, inputs=None, **limits):
    return sandbox.run_code(source, inputs, sandbox.Limits(**limits)).result


def _host_processes_with(marker: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        found.append(int(pid))
            except OSError:
                pass
    return found


# ---- results ------------------------------------------------------------------------------------

def test_main_gets_its_inputs_and_returns_a_dict(monkeypatch):
    monkeypatch.setenv("HETAGENT_API_KEY", "secret-key")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    out = run("import os\n\ndef main(x, text='?'):\n    return {'y': x * 2, 'text': text, "
              "'env': dict(os.environ)}\n", {"x": 21, "text": "hi"})
    assert out["y"] == 42 and out["text"] == "hi"
    assert not any("KEY" in k or "secret" in v for k, v in out["env"].items())


def test_dify_style_arguments_get_the_upstream_text():
    out = run("def main(arg1: str, arg2: str) -> dict:\n    return {'result': arg1 + '|' + arg2}\n",
              {"text": "t"})
    assert out == {"result": "t|t"}


@pytest.mark.parametrize("src,msg", [
    ("def main():\n    return 3\n", "returned int, not a dict"),
    ("x = 1\n", "defines no function main"),
    ("def main():\n    raise ValueError('boom')\n", "ValueError: boom"),
])
def test_code_failures_are_sandbox_errors(src, msg):
    with pytest.raises(sandbox.SandboxError, match=msg):
        run(src)


def test_standin_burns_cpu_and_passes_text_on():
    out = run(sandbox.standin_source(5, 10), {"text": "hello"})
    assert out == {"text": "hello", "blob": "x" * 10}


# ---- the limits that held before still hold ---------------------------------------------------

@pytest.mark.parametrize("body,limits,msg", [
    ("while True: pass", dict(cpu_seconds=1, wall_seconds=30), "CPU-time"),   # wall: a shared machine
    ("import time\ntime.sleep(30)", dict(cpu_seconds=5, wall_seconds=1), "wall-clock"),
    ("x = bytearray(1 << 31)", dict(memory_mb=128), "memory"),
    # ignoring SIGXCPU runs into the hard limit (SIGKILL): still the code's own CPU time
    ("import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True: pass",
     dict(cpu_seconds=1, wall_seconds=30), "CPU-time"),
    ("return {'x': 'x' * (1 << 22)}", dict(max_output_bytes=1 << 16), "more than 65536 bytes"),
    ("import os, time\nos.close(1)\ntime.sleep(30)", dict(wall_seconds=1), "wall-clock"),
])
def test_limits(body, limits, msg):
    src = "def main():\n" + "".join(f"    {line}\n" for line in body.splitlines())
    with pytest.raises(sandbox.SandboxError, match=msg) as e:
        run(src, **limits)
    assert not isinstance(e.value, (sandbox.SandboxKilled, sandbox.SandboxUnavailable))


def test_killed_from_outside_is_sandbox_killed_not_a_limit():
    """Ray kills a dying worker's children with SIGKILL: that must read as retryable (SandboxKilled)."""
    me = os.getpid()

    def kill_bwrap():
        deadline = time.time() + 5
        while time.time() < deadline:
            for pid in os.listdir("/proc"):
                try:
                    with open(f"/proc/{pid}/stat") as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                    with open(f"/proc/{pid}/comm") as f:
                        comm = f.read().strip()
                except (OSError, IndexError):
                    continue
                if comm == "bwrap" and int(fields[1]) == me:
                    time.sleep(0.3)
                    os.kill(int(pid), signal.SIGKILL)
                    return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_bwrap)
    killer.start()
    with pytest.raises(sandbox.SandboxKilled, match="killed from outside"):
        run("import time\n\ndef main():\n    time.sleep(20)\n", wall_seconds=10)
    killer.join()


def test_code_killing_itself_is_its_own_failure():
    with pytest.raises(sandbox.SandboxError, match="SIGKILL") as e:
        run("import os, signal\n\ndef main():\n    os.kill(os.getpid(), signal.SIGKILL)\n")
    assert not isinstance(e.value, sandbox.SandboxKilled)


# ---- escapes (issue 14): each one must fail -----------------------------------------------------

def test_reads_outside_the_view_fail(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret")
    out = run("import os\n\ndef main(paths):\n    seen = {}\n    for p in paths:\n"
              "        try:\n            with open(p) as f:\n                seen[p] = f.read()\n"
              "        except OSError as e:\n            seen[p] = type(e).__name__\n"
              "    return {'seen': seen, 'root': os.listdir('/'), 'etc': os.path.exists('/etc')}\n",
              {"paths": ["/etc/passwd", "/etc/shadow", str(secret), __file__, "/proc/1/environ"]})
    assert all(v in ("FileNotFoundError", "PermissionError") for v in out["seen"].values()), out
    assert not out["etc"]
    assert set(out["root"]) <= {"usr", "lib", "lib64", "lib32", "tmp", "proc", "dev", "root", "opt",
                                "home", "work"}


def test_home_and_working_tree_are_not_visible():
    here = os.path.dirname(os.path.abspath(__file__))
    out = run("import os\n\ndef main(here):\n    def ls(p):\n        try:\n            return os.listdir(p)\n"
              "        except OSError as e:\n            return type(e).__name__\n"
              "    return {'root': ls('/root'), 'here': ls(here), 'home': ls('/home')}\n", {"here": here})
    assert out["here"] == "FileNotFoundError" and out["home"] == "FileNotFoundError"
    # /root holds at most the path to the interpreter (pyenv lives there), nothing else of root's
    assert out["root"] == "FileNotFoundError" or set(out["root"]) <= {".pyenv", ".local", ".conda"}


def test_writes_outside_a_private_tmp_fail(tmp_path):
    name = f"hetagent-escape-{uuid.uuid4().hex}"
    out = run("import os\n\ndef main(name, host_dir):\n    res = {}\n"
              "    for p in ['/tmp/' + name, '/usr/lib/' + name, host_dir + '/' + name, '/' + name]:\n"
              "        try:\n            with open(p, 'w') as f:\n                f.write('x')\n"
              "            res[p] = 'written'\n"
              "        except OSError as e:\n            res[p] = type(e).__name__\n    return res\n",
              {"name": name, "host_dir": str(tmp_path)})
    assert out[f"/tmp/{name}"] == "written"                 # its own /tmp works ...
    assert not os.path.exists(f"/tmp/{name}")               # ... and is not the host's
    assert not (tmp_path / name).exists() and not os.path.exists(f"/usr/lib/{name}")
    assert sum(v == "written" for v in out.values()) == 1, out


def test_no_network_not_even_the_hosts_loopback():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    try:
        out = run("import socket\n\ndef main(port):\n    res = {}\n"
                  "    for host in ['127.0.0.1', '10.0.0.1', '1.1.1.1']:\n        try:\n"
                  "            socket.create_connection((host, port if host == '127.0.0.1' else 80), "
                  "timeout=1).close()\n            res[host] = 'connected'\n"
                  "        except OSError as e:\n            res[host] = type(e).__name__\n    return res\n",
                  {"port": port}, wall_seconds=10)
        with pytest.raises(socket.timeout):
            server.accept()
    finally:
        server.close()
    assert "connected" not in out.values(), out


def test_fork_bomb_is_capped():
    out = run("import os, time\n\ndef main():\n    n = 0\n    try:\n        for _ in range(500):\n"
              "            if os.fork() == 0:\n                time.sleep(3)\n                os._exit(0)\n"
              "            n += 1\n    except OSError as e:\n        return {'forked': n, 'error': e.errno}\n"
              "    return {'forked': n}\n", max_processes=16)
    assert out["forked"] < 16 and out.get("error") == 11    # EAGAIN: RLIMIT_NPROC


def test_a_real_fork_bomb_ends_with_the_sandbox():
    marker = f"bomb-{uuid.uuid4().hex}"
    with pytest.raises(sandbox.SandboxError):
        run("import os, sys\n\ndef main(marker):\n    while True:\n        try:\n"
            "            if os.fork() == 0:\n"
            "                os.execv(sys.executable, [sys.executable, '-c', 'while True: pass', marker])\n"
            "        except OSError:\n            pass\n", {"marker": marker}, wall_seconds=2)
    time.sleep(0.5)
    assert _host_processes_with(marker) == []


def test_no_shell_or_programs_to_run():
    out = run("import os, subprocess\n\ndef main():\n    res = {'system': os.system('id')}\n"
              "    try:\n        subprocess.run(['/bin/sh', '-c', 'id'])\n        res['sh'] = 'ran'\n"
              "    except OSError as e:\n        res['sh'] = type(e).__name__\n    return res\n")
    assert out["system"] != 0 and out["sh"] == "FileNotFoundError"


@pytest.mark.parametrize("wait", ["returns", "wall-clock"])
def test_detached_grandchild_dies_with_the_sandbox(wait):
    """A grandchild that calls setsid() escaped the old process-group kill and wrote a file 8 s later."""
    marker = f"escapee-{uuid.uuid4().hex}"
    src = ("import os, sys, time\n\ndef main(marker):\n    if os.fork() == 0:\n        os.setsid()\n"
           "        if os.fork() == 0:\n"
           "            os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(60)', marker])\n"
           "        os._exit(0)\n    time.sleep(0.5)\n"
           + ("    time.sleep(60)\n" if wait == "wall-clock" else "") + "    return {'spawned': True}\n")
    if wait == "returns":
        assert run(src, {"marker": marker})["spawned"]
    else:
        with pytest.raises(sandbox.SandboxError, match="wall-clock"):
            run(src, {"marker": marker}, wall_seconds=2)
    time.sleep(0.5)
    assert _host_processes_with(marker) == []


def test_signals_cannot_reach_the_host():
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        out = run("import os, signal\n\ndef main(pids):\n    res = {}\n    for pid in pids:\n"
                  "        try:\n            os.kill(pid, signal.SIGKILL)\n            res[pid] = 'sent'\n"
                  "        except OSError as e:\n            res[pid] = type(e).__name__\n"
                  "    return {'res': res, 'ppid': os.getppid()}\n",
                  {"pids": [victim.pid, os.getpid(), os.getppid()]})
        assert victim.poll() is None, "the sandbox killed a host process"
        # host processes do not exist in the sandbox's PID namespace: nothing to signal
        assert out["res"][str(victim.pid)] == "ProcessLookupError"
        assert out["res"][str(os.getpid())] == "ProcessLookupError"
        # kill(-1) reaches only the sandbox's own processes
        with pytest.raises(sandbox.SandboxError):
            run("import os, signal\n\ndef main():\n    os.kill(-1, signal.SIGKILL)\n")
        assert victim.poll() is None
    finally:
        victim.kill()
        victim.wait()


def test_sys_path_cannot_reach_site_packages():
    purelib = sysconfig.get_paths()["purelib"]
    out = run("import sys\n\ndef main(path):\n    sys.path.append(path)\n    res = {}\n"
              "    for mod in ['yaml', 'pydantic', 'hetagent', 'ray']:\n        try:\n"
              "            __import__(mod)\n            res[mod] = 'imported'\n"
              "        except ImportError as e:\n            res[mod] = type(e).__name__\n    return res\n",
              {"path": purelib})
    assert "imported" not in out.values(), out


def test_runs_unprivileged_without_capabilities():
    out = run("import os\n\ndef main():\n    caps = [l.split()[1] for l in open('/proc/self/status') "
              "if l.startswith('CapEff')]\n    return {'uid': os.getuid(), 'euid': os.geteuid(), 'caps': caps,"
              " 'groups': os.getgroups()}\n")
    assert out["uid"] != 0 and out["euid"] != 0 and out["caps"] == ["0000000000000000"]
    assert 0 not in out["groups"]


def test_missing_bubblewrap_refuses_code_nodes(monkeypatch):
    monkeypatch.setattr(sandbox, "bwrap_path", lambda: None)
    with pytest.raises(sandbox.SandboxUnavailable, match="apt-get install bubblewrap") as e:
        run("def main():\n    return {}\n")
    assert "\n" not in str(e.value)
