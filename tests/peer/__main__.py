"""Run task-loader peers by hand or for the benchmark.

    python -m tests.peer --listen 127.0.0.2:3001 --listen 127.0.0.3:3001
    python -m tests.peer --count 16 --port 3001 --fault-rate 0.05 --faults hang,drop --seed 7

Prints one "host:port" per line (ready for `target add --hosts`), serves
until Ctrl-C or SIGTERM, then prints what each peer did.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading

from tests.peer.peer import FAULTS, TaskLoaderPeer


def main(argv: list[str] | None = None) -> int:
    options = _parser().parse_args(argv)
    try:
        peers = [TaskLoaderPeer(host, port, **_peer_options(options)) for host, port in _listen(options)]
        for peer in peers:
            peer.start()
            print(peer.address, flush=True)
    except (ValueError, OSError) as error:
        sys.exit(f"python -m tests.peer: {error}")
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    for peer in peers:
        peer.close()
        _summary(peer)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tests.peer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", action="append", default=[], metavar="HOST:PORT",
                        help="a loopback address to serve (repeatable)")
    parser.add_argument("--count", type=int, default=0, help="serve N peers on 127.0.0.2 … 127.0.0.(N+1)")
    parser.add_argument("--port", type=int, default=3001, help="port for --count peers (0 = any)")
    parser.add_argument("--time-scale", type=float, default=0.0, help="0 = as fast as possible, 1 = real time")
    parser.add_argument("--exec-ms", type=float, default=1.0, help="execution time of every job in ms")
    parser.add_argument("--events-per-message", type=int, default=16)
    parser.add_argument("--startup-delay", type=float, default=0.0, help="answer AVAILABLE only after N s")
    parser.add_argument("--fault-rate", type=float, default=0.0, help="probability of a fault per task-set")
    parser.add_argument("--faults", default=",".join(FAULTS), help="fault kinds to draw from, comma-separated")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def _listen(options) -> list[tuple[str, int]]:
    addresses = []
    for text in options.listen:
        host, _, port = text.rpartition(":")
        if not host.startswith("127.") or not port.isdigit():
            sys.exit(f"--listen {text!r}: expected a loopback HOST:PORT such as 127.0.0.2:3001")
        addresses.append((host, int(port)))
    addresses += [(f"127.0.0.{2 + i}", options.port) for i in range(options.count)]
    if not addresses:
        sys.exit("nothing to serve: give --listen HOST:PORT or --count N")
    return addresses


def _peer_options(options) -> dict:
    return {
        "time_scale": options.time_scale,
        "exec_time": options.exec_ms,
        "events_per_message": options.events_per_message,
        "startup_delay": options.startup_delay,
        "fault_rate": options.fault_rate,
        "fault_kinds": tuple(kind for kind in options.faults.split(",") if kind),
        "seed": options.seed,
    }


def _summary(peer: TaskLoaderPeer) -> None:
    faults = [record.fault for record in peer.tasksets if record.fault]
    print(f"{peer.address}: {len(peer.tasksets)} task-sets, {len(peer.boots)} boot(s), "
          f"{len(peer.received_binaries())} binaries received, faults {faults or 'none'}, "
          f"protocol errors {len(peer.errors)}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
