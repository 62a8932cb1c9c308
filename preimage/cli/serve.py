"""``preimage serve``: a local web app to watch pre-images form, live, in a browser.

Starts a FastAPI app under uvicorn on 127.0.0.1:8000 (``--host``/``--port``), with ``--jobs``
optimizations at once and the rest in line; everything it writes goes under ``--out``. Ctrl-C or
SIGTERM stops it: running jobs are cancelled at their next step and the files written so far stay.
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import sys
from pathlib import Path

from ..errors import PreimageError
from .common import positive_int

LOCAL = ("127.0.0.1", "localhost", "::1")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "serve", help="a local web app: watch pre-images form, live, in a browser",
        description="Serve a web page to invert layers, visualize classes, draw saliency maps and paint "
                    "in a style, with the reconstruction shown live as it forms. Jobs wait in line; "
                    "results stay downloadable until the server stops. Ctrl-C stops it (exit 130; "
                    "SIGTERM: exit 0).",
        epilog="examples:\n"
               "  preimage serve                      # then open http://127.0.0.1:8000\n"
               "  preimage serve --port 8080 --jobs 2 --out out/ui\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only; anything else "
                        "lets other machines run jobs on this one)")
    p.add_argument("--port", type=_port, default=8000, help="TCP port, 1-65535 (default: 8000)")
    p.add_argument("--jobs", type=positive_int, default=1,
                   help="optimizations that run at once; on the CPU they share its cores (default: 1)")
    p.add_argument("--queue", type=positive_int, default=32,
                   help="jobs that may wait beyond those; more are refused as 'server busy' (default: 32)")
    p.add_argument("--out", "-o", default="out/serve",
                   help="the only folder the server writes to: uploads/ and jobs/ (default: out/serve)")
    p.add_argument("--max-upload-mb", type=_positive_float, default=20.0,
                   help="largest accepted upload in megabytes (default: 20)")
    p.add_argument("--max-steps", type=positive_int, default=5000, help="most steps a job may ask for (default: 5000)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: auto)")
    p.set_defaults(run=run)


def _port(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (1-65535)")
    return v


def _positive_float(text: str) -> float:
    from .common import positive_float

    return positive_float(text)


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise PreimageError(f"--out {out} is a file, not a folder")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        raise PreimageError(f"cannot write to {out}")


def _check_bind(host: str, port: int) -> None:
    """Refuse an address that cannot be bound (unknown host, port in use) before anything loads."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise PreimageError(f"cannot resolve --host {host!r}") from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as exc:
            raise PreimageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _is_local(host: str) -> bool:
    if host in LOCAL:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _address(host: str, port: int) -> str:
    """``host:port``, with an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _url(host: str, port: int) -> str:
    """The address to open in a browser: the loopback address for an "every address" host such as
    ``0.0.0.0`` or ``::`` (which a browser cannot open), else ``host`` itself."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return f"http://{_address(host or '127.0.0.1', port)}"
    if ip.is_unspecified:
        host = "::1" if ip.version == 6 else "127.0.0.1"
    return f"http://{_address(host, port)}"


def run(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as exc:
        raise PreimageError(f"preimage serve needs FastAPI and uvicorn ({exc.name} is missing): "
                            "pip install 'preimage[serve]'") from None
    import signal

    from ..serve import ServeConfig, create_app
    from .common import device_from_args

    out = Path(args.out)
    _check_out(out)
    _check_bind(args.host, args.port)
    device = str(device_from_args(args))
    if not _is_local(args.host):
        print(f"preimage serve: warning: listening on {args.host}, beyond this machine: anyone who can reach "
              f"port {args.port} can upload images and run jobs here", file=sys.stderr)
    config = ServeConfig(out=out, jobs=args.jobs, max_queued=args.queue, device=device,
                         max_upload_bytes=int(args.max_upload_mb * 1_000_000), max_steps=args.max_steps)
    if args.jobs > 1 and device == "cpu":  # N jobs share the cores instead of each taking all of them
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // args.jobs))
    app = create_app(config)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame) -> None:  # type: ignore[override]
            app.state.queue.stop()  # running jobs end at their next step, so their event streams close
            super().handle_exit(sig, frame)

    server = Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning",
                                   timeout_graceful_shutdown=10, lifespan="on"))
    received: list[int] = []
    previous = {sig: signal.signal(sig, lambda s, _f: received.append(s)) for sig in (signal.SIGINT, signal.SIGTERM)}
    print(f"preimage serve: open {_url(args.host, args.port)}  (listening on {_address(args.host, args.port)}; "
          f"{args.jobs} job(s) at once, writing to {out}/; Ctrl-C stops)", flush=True)
    try:
        server.run()  # handles SIGINT/SIGTERM itself, then re-raises them into the handlers above
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        app.state.queue.close(timeout=10)
    if not server.started and not received:
        raise PreimageError(f"the server did not start on {args.host}:{args.port}")
    if signal.SIGINT in received:
        print("preimage serve: stopped (Ctrl-C)", file=sys.stderr)
        return 130
    print("preimage serve: stopped", file=sys.stderr)
    return 0
