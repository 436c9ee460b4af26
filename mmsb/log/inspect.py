"""What is in a log file, and whether all of it is sound: behind ``python -m mmsb inspect``/``verify``.

Reading never changes the file. The report covers the header, the frames,
the records by type, the LSN range, the pages a replay of the whole commits
ends with, and any damage: a torn tail (where and how many bytes) or damage
before the tail (where). ``sound`` is true only for a file with none, whose
every record replays.
"""

from __future__ import annotations

import os
import uuid
from typing import Any, Callable

import numpy as np

from .._layout import REC_BIND, REC_COMMIT, REC_CREATE, REC_DELETE, REC_DELTA, REC_EDGE, REC_INFO, REC_RESIZE
from ..errors import LogCorruptError
from .file import _kernels, base_path, read_log

_NAMES = {REC_DELTA: "delta", REC_CREATE: "create", REC_DELETE: "delete", REC_COMMIT: "commit",
          REC_EDGE: "edge", REC_BIND: "binding", REC_INFO: "info", REC_RESIZE: "resize"}


def inspect(path: Any, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """A report on the log at ``path`` (a dict; see the module docstring)."""
    from ..durability import _state_from
    from ..pool import start

    k = _kernels()
    path = os.fspath(path)
    contents = read_log(path, strict=False, warn=False)
    h = contents.header
    report: dict[str, Any] = {
        "path": path,
        "log_id": str(uuid.UUID(bytes=h.log_id)),
        "created_ns": h.created_ns,
        "base_lsn": h.base_lsn,
        "continues": h.continues,
        "file_bytes": contents.file_size,
        "frames": contents.frames,
        "damage": None,
    }
    if contents.status == k.SCAN_TORN:
        report["damage"] = {"kind": "torn tail", "offset": contents.valid_end, "bytes": contents.torn_bytes}
    elif contents.status == k.SCAN_CORRUPT:
        report["damage"] = {"kind": "corrupt", "offset": contents.valid_end,
                            "bytes": contents.file_size - contents.valid_end}
    data = contents.payload
    cut, commits, deltas, lsn, bad = k.check_records(data, 0, data.size, np.uint64((1 << 64) - 1))
    counts = np.zeros(256, np.int64)
    nbytes = np.zeros(256, np.int64)
    k.count_records(data, 0, cut, counts, nbytes)
    report["records"] = {_NAMES[t]: {"count": int(counts[t]), "bytes": int(nbytes[t])} for t in _NAMES if counts[t]}
    report["commits"] = int(commits)
    report["deltas"] = int(deltas)
    report["lsn_range"] = [h.base_lsn + 1, int(lsn)] if deltas else None
    if bad >= 0 and report["damage"] is None:
        at = contents.file_offset(int(bad))
        report["damage"] = {"kind": "corrupt", "offset": at, "bytes": contents.file_size - at}
    if h.continues:
        report["pages"] = None
        report["replay"] = (f"continues checkpoint {h.base_id.hex()} (LSN {h.base_lsn}), which mmsb.replay "
                            f"reads from {os.path.basename(base_path(path, h.base_id))!r} beside it")
        return report
    tick = None if progress is None else (lambda done: progress(done, int(cut)))
    try:
        st = _state_from(data[:cut], None, None, f"log {path!r}", start, contents.file_offset, tick)
    except LogCorruptError as err:
        report["pages"] = None
        report["replay"] = str(err)
        if report["damage"] is None:
            report["damage"] = {"kind": "corrupt", "offset": err.offset,
                                "bytes": contents.file_size - (err.offset or 0)}
        return report
    try:
        stats = st.stats()
        report["pages"] = {"live": stats["pages"], "bytes": stats["page_bytes"]}
        report["replay"] = "ok"
        report["state_hash"] = st.state_hash()
    finally:
        st.close()
    return report


def sound(report: dict[str, Any]) -> bool:
    return report["damage"] is None and report["replay"] == "ok"


def format_report(r: dict[str, Any]) -> str:
    lines = [
        f"log        {r['path']}",
        f"id         {r['log_id']}" + (f"  (continues a checkpoint from LSN {r['base_lsn']})" if r["continues"] else ""),
        f"size       {r['file_bytes']} B in {r['frames']} frames, {r['commits']} commits",
        "LSNs       " + (f"{r['lsn_range'][0]} .. {r['lsn_range'][1]} ({r['deltas']} deltas)" if r["lsn_range"]
                         else "none"),
    ]
    for name, c in r["records"].items():
        lines.append(f"  {name:<9}{c['count']:>10} records {c['bytes']:>14} B")
    if r.get("pages"):
        lines.append(f"pages      {r['pages']['live']} live, {r['pages']['bytes']} B after replay")
    d = r["damage"]
    lines.append("damage     none" if d is None else f"damage     {d['kind']} at offset {d['offset']} ({d['bytes']} B)")
    lines.append(f"replay     {r['replay']}")
    if "state_hash" in r:
        lines.append(f"hash       {r['state_hash']}")
    return "\n".join(lines)
