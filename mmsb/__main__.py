"""``python -m mmsb``: the command line.

``profile`` times each budgeted workload with mmsb and with plain NumPy,
beside the original's figures, and marks each budget met or missed
(docs/PERFORMANCE.md). ``calibrate`` measures where this machine's GPU starts
to beat the CPU and stores it. ``demo`` creates pages, writes them, and prints
what happened and how long each step took. ``--version`` and ``--help`` do what they say.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Sequence

from ._version import __version__


def _demo(pages: int, size: int, writes: int, out=sys.stdout) -> int:
    import numpy as np

    import mmsb

    def say(step: str, seconds: float, what: str) -> None:
        print(f"{step:<34} {seconds * 1e3:9.3f} ms   {what}", file=out)

    print(f"mmsb {__version__} demo: {pages} pages of {size} B, {writes} writes", file=out)
    t = time.perf_counter()
    import mmsb.kernels  # noqa: F401 - load numba and the cached kernels up front, to time it apart

    say("load kernels (numba, JIT cache)", time.perf_counter() - t, "")
    t = time.perf_counter()
    st = mmsb.start()
    say("start a state", time.perf_counter() - t, repr(st))
    t = time.perf_counter()
    ids = st.create_pages(pages, size)
    say("create_pages", time.perf_counter() - t, f"ids {ids[0]} .. {ids[-1]}")

    rng = np.random.default_rng(0)
    first = st.page(int(ids[0]))
    data = rng.integers(0, 256, size, dtype=np.uint8)
    t = time.perf_counter()
    delta = st.update_page(first, data)
    say("first update_page (may compile)", time.perf_counter() - t, repr(delta))

    targets = rng.integers(0, pages, writes)
    payloads = rng.integers(0, 256, (writes, size), dtype=np.uint8)
    payloads[:, : size // 2] = data[: size // 2]  # half of every write repeats bytes already there
    t = time.perf_counter()
    for i in range(writes):
        st.update_page(int(ids[targets[i]]), payloads[i])
    dt = time.perf_counter() - t
    say(f"{writes} x update_page", dt, f"{dt / writes * 1e6:.2f} us each")

    unchanged = st.update_page(int(ids[targets[-1]]), payloads[-1])
    say("update_page with identical bytes", 0.0, f"returns {unchanged!r}: no delta, no epoch move")

    per = 8
    starts = np.arange(pages + 1, dtype=np.int64) * per
    offsets = rng.integers(0, size - per + 1, pages)[:, None] + np.arange(per)
    batch = mmsb.DeltaBatch.from_sparse(ids, starts, offsets.ravel(), rng.integers(0, 256, pages * per))
    warm = mmsb.DeltaBatch.from_sparse(ids[:1], starts[:2], offsets[0], np.zeros(per, np.uint8))
    t = time.perf_counter()
    st.apply_batch(warm)
    say("first apply_batch (may compile)", time.perf_counter() - t, "one delta")
    t = time.perf_counter()
    lsns = st.apply_batch(batch)
    dt = time.perf_counter() - t
    say(f"apply_batch of {pages} x {per} B deltas", dt, f"{pages / dt / 1e6:.2f} M deltas/s, LSNs {lsns.max()}")

    stats = st.stats()
    print(
        f"state: {stats['pages']} pages, {stats['deltas']} deltas, LSN {stats['lsn']}, "
        f"log {stats['log_bytes']} B, epoch of page {first.id}: {first.epoch}",
        file=out,
    )
    t = time.perf_counter()
    mmsb.stop(st)
    say("stop (reset, back to the pool)", time.perf_counter() - t, "")
    return 0


def _progress(what: str, out=None):
    """A tqdm bar over bytes when ``out`` is a terminal, else None (no output for pipes and logs)."""
    out = out or sys.stderr
    if not out.isatty():
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=0, unit="B", unit_scale=True, desc=what, file=out, leave=False)

    def tick(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    return tick, bar.close


def _inspect(args: argparse.Namespace, out=None) -> int:
    import json

    from .errors import MMSBError
    from .log.inspect import format_report, inspect, sound

    out = out or sys.stdout
    tick, done = _progress("replaying")
    try:
        report = inspect(args.log, tick)
    except MMSBError as err:
        print(f"{args.log}: {err}", file=out)
        return 1
    finally:
        done()
    print(json.dumps(report, indent=2) if args.json else format_report(report), file=out)
    if args.command == "verify":
        print("verify: " + ("ok" if sound(report) else "FAILED"), file=out)
        return 0 if sound(report) else 1
    return 0


def _replay_cmd(args: argparse.Namespace, out=None) -> int:
    import mmsb

    out = out or sys.stdout
    tick, done = _progress("replaying")
    try:
        st = mmsb.replay(args.log, to_lsn=args.to_lsn, progress=tick)
    except mmsb.MMSBError as err:
        print(f"{args.log}: {err}", file=out)
        return 1
    finally:
        done()
    try:
        stats = st.stats()
        print(f"replayed {args.log} to LSN {st.lsn}: {stats['pages']} pages, {stats['page_bytes']} B, "
              f"hash {st.state_hash()}", file=out)
        if args.checkpoint:
            st.checkpoint(args.checkpoint)
            print(f"checkpoint written to {args.checkpoint}", file=out)
    finally:
        st.close()
    return 0


def _calibrate(args: Any, parser: Any, out=sys.stdout) -> int:
    import json

    from . import gpu
    from .errors import MMSBError

    try:
        sizes = None if args.sizes is None else [int(x) for x in args.sizes.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--sizes must be comma-separated integers, got {args.sizes!r}")
    try:
        result = gpu.calibrate(sizes, args.repeat, store=not args.no_store)
    except MMSBError as exc:
        print(f"mmsb calibrate: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result), file=out)
    else:
        from .gpu.calibration import format_table

        print(format_table(result), file=out)
        if not args.no_store:
            print(f"stored in {gpu.calibration_path()}", file=out)
    return 0


_LOG_COMMANDS = {"inspect": _inspect, "verify": _inspect, "replay": _replay_cmd}


def _add_log_commands(sub: Any) -> None:
    for name, text in [("inspect", "report a log file's records, pages, LSN range, bytes and any damage"),
                       ("verify", "check a log file end to end; exit status 0 if sound, 1 if not")]:
        p = sub.add_parser(name, help=text)
        p.add_argument("log", help="path of the log file (only read)")
        p.add_argument("--json", action="store_true", help="print the report as JSON")
    p = sub.add_parser("replay", help="replay a log file, optionally to an LSN, and write a checkpoint")
    p.add_argument("log", help="path of the log file (only read)")
    p.add_argument("--to-lsn", type=int, default=None, help="stop after the last commit at or before this LSN")
    p.add_argument("--checkpoint", default=None, metavar="OUT", help="write the replayed state here")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmsb", description="mmsb, a Memory-Mapped State Bus.")
    parser.add_argument("--version", action="version", version=f"mmsb {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    prof = sub.add_parser("profile", help="time each budgeted workload with mmsb and with a plain NumPy script, "
                                          "beside the original's figures, and mark each budget met or missed "
                                          "(about a minute; docs/PERFORMANCE.md)",
                          description="Times each budgeted workload with mmsb and with the plain NumPy/Python "
                                      "script doing the same bookkeeping (a dict of uint8 pages, a list log, a "
                                      "callback per derived page), checks first that both leave the same bytes, "
                                      "and prints one row per workload: the original system's published figure "
                                      "(a Julia front-end over a Rust core, on its machine), both medians, mmsb's "
                                      "speed against each, its budget and the verdict, met or missed. Workloads "
                                      "and budgets: docs/PERFORMANCE.md.")
    prof.add_argument("--quick", action="store_true",
                      help="fewer, shorter runs: about 10 s after warm-up, rougher figures")
    prof.add_argument("--json", action="store_true", help="print the same numbers, budgets and verdicts as JSON")
    demo = sub.add_parser("demo", help="create pages, write them, print what happened and how long it took")
    demo.add_argument("--pages", type=int, default=4096, help="pages to create (default 4096)")
    demo.add_argument("--size", type=int, default=1024, help="page size in bytes (default 1024)")
    demo.add_argument("--writes", type=int, default=10_000, help="update_page calls (default 10000)")
    _add_log_commands(sub)
    cal = sub.add_parser("calibrate", help="measure CPU against device apply on this machine's GPU and store "
                                           "the transfer threshold for location='auto'")
    cal.add_argument("--sizes", default=None, help="comma-separated page sizes in bytes (default 4 KiB .. 64 MiB)")
    cal.add_argument("--repeat", type=int, default=5, help="timed runs per size (default 5)")
    cal.add_argument("--no-store", action="store_true", help="measure and print, but keep the stored threshold")
    cal.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    if args.command == "calibrate":
        return _calibrate(args, parser)
    if args.command in _LOG_COMMANDS:
        return _LOG_COMMANDS[args.command](args)
    if args.command == "profile":
        from .profile import main as profile  # imported here: it loads numba and the benchmarks' builders

        return profile(quick=args.quick, as_json=args.json)
    if args.command == "demo":
        if args.pages < 1 or args.size < 8 or args.writes < 1:
            parser.error("--pages and --writes must be >= 1 and --size >= 8")
        return _demo(args.pages, args.size, args.writes)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
