"""Evaluation reports: the markdown table and the JSON / markdown files scripts/evaluate.py writes."""
from __future__ import annotations

import json
from pathlib import Path


from pixelface.core.files import write_bytes_atomic


def markdown_table(rows: dict[str, dict[str, float]]) -> str:
    """One row per evaluated checkpoint, one column per metric key (in first-seen order)."""
    columns = list(dict.fromkeys(key for values in rows.values() for key in values))
    lines = ["| checkpoint | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for label, values in rows.items():
        cells = [f"{values[c]:.4g}" if c in values else "-" for c in columns]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def report_paths(out_dir: str | Path, overwrite: bool = False) -> tuple[Path, Path]:
    """(metrics.json, metrics.md) in `out_dir`; FileExistsError if either exists and not `overwrite`."""
    targets = Path(out_dir) / "metrics.json", Path(out_dir) / "metrics.md"
    existing = [str(p) for p in targets if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{' and '.join(existing)} already exist; pass --force to replace them")
    return targets


def write_reports(out_dir: str | Path, reports: dict[str, dict], overwrite: bool = False) -> str:
    """Write <out_dir>/metrics.json (every report in full) and metrics.md (the table) -> the table.
    Existing reports are kept unless `overwrite`."""
    targets = report_paths(out_dir, overwrite)
    table = markdown_table({label: report["metrics"] for label, report in reports.items()})
    write_bytes_atomic(targets[0], (json.dumps(reports, indent=1) + "\n").encode())
    write_bytes_atomic(targets[1], table.encode())
    return table


# ---------------------------------------------------------------------------------------------------------------
