"""Does a board's measured latency agree with a local bench of the same package, and how far
is the phones' estimate (segment latencies priced with the exit mix) from the routed latency
actually measured? ``bench --ssh`` on a board, ``bench`` here, in alternating rounds.

    .venv/bin/python benchmarks/board_vs_local.py PKG [--data digits:test] [--rounds 3]
        [--ssh HOST --ssh-config FILE]

Without ``--ssh`` the board is this machine behind a throwaway sshd on 127.0.0.1 (as in the
tests; needs Debian's openssh-server and root): the two figures should then agree within the
machine's noise, which is what this checks. The board's device half is set up on first use.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _x(speedup: float | None) -> str:
    return "-" if speedup is None else f"{speedup:.2f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", type=Path)
    parser.add_argument("--data", default=None)
    parser.add_argument("--samples", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--ssh", default=None)
    parser.add_argument("--ssh-config", type=Path, default=None)
    args = parser.parse_args()
    from cephalon_edge.tune.bench.boards import bench_boards
    from cephalon_edge.tune.bench.host import BenchSpec, bench_host

    spec = BenchSpec(data=args.data, samples=args.samples, runs=args.runs)
    with tempfile.TemporaryDirectory(prefix="board-bench-") as tmp:
        server = None
        address, config = args.ssh, args.ssh_config
        if address is None:
            sys.path.insert(0, str(REPO / "tests"))
            import sshd

            if sshd.why_not():
                sys.exit(f"no local board: {sshd.why_not()}; pass --ssh HOST")
            key = sshd.keygen(Path(tmp) / "id_ed25519")
            server = sshd.SshServer(Path(tmp) / "sshd", Path(tmp) / "cache", key).start()
            address = server.address
            config = sshd.client_config(Path(tmp) / "ssh_config", Path(tmp) / "id_ed25519", [server.known_hosts_line()])
        try:
            rows = []
            for i in range(args.rounds):  # alternating blocks: here, then the board
                local = bench_host(args.package, spec).to_json()
                board = bench_boards(args.package, spec, [address], config, setup=i == 0).to_json()["devices"][0]
                if board["status"] != "ok":
                    sys.exit(f"the board failed: {board['error']}")
                rows.append((local["end_to_end"]["mean_ms"], board["end_to_end"]["mean_ms"],
                             local["speedup"], board["speedup"], board["expected"]["mean_ms"]))
                print(f"round {i + 1}: routed mean here {rows[-1][0]:.3f} ms, on the board {rows[-1][1]:.3f} ms; "
                      f"speedup vs the package's static model here {_x(rows[-1][2])}, on the board {_x(rows[-1][3])}; "
                      f"expected from segments {rows[-1][4]:.3f} ms", flush=True)
        finally:
            if server:
                server.stop()
    ratio = statistics.median(b / a for a, b, *_ in rows)
    gap = statistics.median(e / b for _, b, _, _, e in rows)
    print(f"{args.package.name}: board/local routed mean, median of {len(rows)} rounds: {ratio:.3f}; "
          f"expected (priced from segment latencies) / measured on the board: {gap:.3f}")


if __name__ == "__main__":
    main()
