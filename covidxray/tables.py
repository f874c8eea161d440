"""A source's tables (metadata.csv, data.csv, NIH's labels file, a `table` set's CSV): their
rows with line numbers, a row that cannot be read recorded as a skip, and the files they list."""

import csv
import io
from pathlib import Path

from covidxray.cli import PipelineError
from covidxray.folders import NOT_UTF8, present


def read_rows(path, columns, skipped):
    """A CSV file's rows as dicts, each with `line`, its line number(s); the header must name
    `columns`. A row that cannot be read goes to `skipped` as <path>:<line> with the reason:
    invalid UTF-8, or a field count other than the header's (an unclosed quote joins lines
    into one such row)."""
    try:
        reader = csv.reader(io.StringIO(
            # utf-8-sig: Excel's "CSV UTF-8" starts the file with a byte-order mark
            Path(path).read_bytes().decode("utf-8-sig", errors="surrogateescape"), newline=""))
        header = next(reader, None)
        missing = [c for c in columns if c not in (header or [])]
        if not header or missing:
            raise PipelineError(f"{path}: cannot read (no header)" if not header
                                else f"{path}: missing column(s) {', '.join(missing)}")
        rows, end = [], reader.line_num
        for fields in reader:
            start, end = end + 1, reader.line_num
            line = f"{start}" + (f"-{end}" if end > start else "")
            if not fields:
                continue  # a blank line holds no row
            if len(fields) != len(header):
                joined = " (an open quote joined its lines)" if end > start else ""
                skipped.append({"path": f"{path}:{line}", "reason": f"{len(fields)} field(s),"
                                f" the header has {len(header)}{joined}"})
            elif NOT_UTF8.search("".join(fields)):
                skipped.append({"path": f"{path}:{line}", "reason": "not valid UTF-8"})
            else:
                rows.append({**dict(zip(header, fields)), "line": line})
    except (OSError, csv.Error) as err:
        raise PipelineError(f"{path}: cannot read ({err})") from err
    return rows


def listed_file(path, table, line, skipped):
    """Whether the file that `table`'s row at `line` lists is there; a missing one goes to
    `skipped` (a broken link is for the decoder)."""
    if present(path) or path.is_symlink():
        return True
    skipped.append({"path": str(path),
                    "reason": f"listed in {Path(table).name} line {line}, file missing"})
    return False
