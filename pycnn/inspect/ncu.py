"""ncu's CSV records (bench/results/gpu-session-*/ncu-*.csv) as dicts, and the
emulator's counters (pycnn.inspect.dynamic) beside ncu's for the same launch.

Two kinds of file: ``--page raw`` (ncu-probes.csv: a header row, a row of units, then
one row per launch with every metric in its own column) and ``--page details``
(ncu-layer3.csv & co.: one row per launch, section and metric). Lines that do not
start with a quote are ncu's own messages (==PROF==, ==WARNING==) and are skipped.
Values are numbers where they read as one ("32,768" is 32768), else strings.
Launches are keyed by the kernel's short name: "void pycnn::conv2d_fwd_kernel2<...>(...)"
is "conv2d_fwd_kernel2", as pycnn::launch() names it and the emulator reports it.
"""
from __future__ import annotations

import csv
from pathlib import Path

#: (what, the emulator's counter (kind, key), ncu's metric) compared for one launch.
COUNTERS = (
    ("global load requests", ("global_ld", "requests"), "l1tex__t_requests_pipe_lsu_mem_global_op_ld.sum"),
    ("global load sectors", ("global_ld", "sectors"), "l1tex__t_sectors_pipe_lsu_mem_global_op_ld.sum"),
    ("global store requests", ("global_st", "requests"), "l1tex__t_requests_pipe_lsu_mem_global_op_st.sum"),
    ("global store sectors", ("global_st", "sectors"), "l1tex__t_sectors_pipe_lsu_mem_global_op_st.sum"),
    ("shared load requests", ("shared_ld", "requests"), "smsp__inst_executed_op_shared_ld.sum"),
    ("shared store requests", ("shared_st", "requests"), "smsp__inst_executed_op_shared_st.sum"),
    ("shared load wavefronts", ("shared_ld", "wavefronts"), "l1tex__data_pipe_lsu_wavefronts_mem_shared_op_ld.sum"),
    ("shared store wavefronts", ("shared_st", "wavefronts"), "l1tex__data_pipe_lsu_wavefronts_mem_shared_op_st.sum"),
    ("shared load bank conflicts", ("shared_ld", "bank_conflicts"), "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum"),
    ("shared store bank conflicts", ("shared_st", "bank_conflicts"), "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_st.sum"),
    ("grid size (blocks)", ("blocks", None), "launch__grid_size"),
    ("block size (threads)", ("threads", None), "launch__block_size"),
)


def short_name(kernel: str) -> str:
    """The function's name without return type, namespaces, template arguments and
    parameters: "void pycnn::f<T<1>, 0>(const float *)" -> "f"."""
    name = kernel.strip()
    if name.startswith("void "):
        name = name[5:]
    out, depth = [], 0
    for ch in name:
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "(" and depth == 0:
            break
        elif depth == 0:
            out.append(ch)
    return "".join(out).rsplit("::", 1)[-1].strip()


def _value(text: str):
    t = text.replace(",", "")
    try:
        f = float(t)
    except ValueError:
        return text
    return int(f) if f.is_integer() and "." not in t else f


def _rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(line for line in f if line.startswith('"')))


def read_raw(path) -> dict[str, list[dict]]:
    """A ``--page raw`` CSV: kernel short name -> its launches in file order, each a
    dict of every column (metric name -> value), plus "kernel" (the short name) and
    "kernel_name" (ncu's)."""
    rows = _rows(Path(path))
    if not rows:
        raise ValueError(f"path: no CSV rows in {path}")
    header = rows[0]
    if "Kernel Name" not in header:
        raise ValueError(f"path: {path} has no 'Kernel Name' column: not an ncu CSV")
    out: dict[str, list[dict]] = {}
    for row in rows[1:]:
        record = dict(zip(header, row))
        if not record.get("ID"):  # the units row
            continue
        launch = {key: _value(v) for key, v in record.items()}
        launch["kernel_name"] = record["Kernel Name"]
        launch["kernel"] = short_name(record["Kernel Name"])
        out.setdefault(launch["kernel"], []).append(launch)
    return out


def read_details(path) -> dict[str, list[dict]]:
    """A ``--page details`` CSV: kernel short name -> its launches in file order, each
    {"id", "kernel", "kernel_name", "block", "grid", "metrics": {metric name:
    {"value", "unit", "section"}}}."""
    rows = _rows(Path(path))
    if not rows:
        raise ValueError(f"path: no CSV rows in {path}")
    header = rows[0]
    need = {"ID", "Kernel Name", "Section Name", "Metric Name", "Metric Unit", "Metric Value"}
    if not need <= set(header):
        raise ValueError(f"path: {path} lacks the columns {sorted(need - set(header))} of ncu's --page details")
    launches: dict[str, dict] = {}
    for row in rows[1:]:
        r = dict(zip(header, row))
        launch = launches.setdefault(r["ID"], {
            "id": int(r["ID"]), "kernel": short_name(r["Kernel Name"]), "kernel_name": r["Kernel Name"],
            "block": r.get("Block Size"), "grid": r.get("Grid Size"), "metrics": {}})
        if r["Metric Name"]:
            launch["metrics"][r["Metric Name"]] = {"value": _value(r["Metric Value"]), "unit": r["Metric Unit"],
                                                   "section": r["Section Name"]}
    out: dict[str, list[dict]] = {}
    for launch in launches.values():
        out.setdefault(launch["kernel"], []).append(launch)
    return out


def compare(emulated: dict, ncu_launch: dict) -> list[dict]:
    """The emulator's counters of one launch (an entry of dynamic's "launches") beside
    ncu's raw counters of the same launch: one dict per counter of COUNTERS, with
    "what", "ncu_metric", "emulator", "ncu" and "ratio" (ncu / emulator; None where the
    emulator has 0)."""
    out = []
    for what, (kind, key), metric in COUNTERS:
        if kind == "blocks":
            mine = emulated["blocks"]
        elif kind == "threads":
            b = emulated["block"]
            mine = b[0] * b[1] * b[2]
        else:
            mine = emulated[kind][key]
        theirs = ncu_launch.get(metric)
        ratio = theirs / mine if isinstance(theirs, (int, float)) and mine else None
        out.append({"what": what, "ncu_metric": metric, "emulator": mine, "ncu": theirs, "ratio": ratio})
    return out


def table(rows: list[dict]) -> str:
    """compare()'s rows as a markdown table."""
    lines = ["| counter | emulator | ncu (H200) | ncu / emulator |", "|---|---:|---:|---:|"]
    for r in rows:
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.3f}"
        mine = r["emulator"]
        mine = f"{mine:,.0f}" if isinstance(mine, (int, float)) else str(mine)
        theirs = r["ncu"]
        theirs = f"{theirs:,.0f}" if isinstance(theirs, (int, float)) else str(theirs)
        lines.append(f"| {r['what']} | {mine} | {theirs} | {ratio} |")
    return "\n".join(lines)
