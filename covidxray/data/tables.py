"""A source's tables (metadata.csv, data.csv, NIH's labels file, a `table` set's CSV): their
rows with line numbers, a row that cannot be read recorded as a skip, and the files they list."""

import csv
import io
from pathlib import Path

from covidxray.data.folders import NOT_UTF8, present
from covidxray.errors import PipelineError


def read_rows(path, columns, skipped):
    """A CSV file's rows as dicts, each with `line`, its line number(s); the header must name
    `columns`, each a name or a tuple of names of which one will do (an upstream that renamed a
    column; the row holds it under the first). A row that cannot be read goes to `skipped` as
    <path>:<line> with the reason: invalid UTF-8, or a field count other than the header's (an
    unclosed quote joins lines into one such row)."""
    try:
        reader = csv.reader(io.StringIO(
            # utf-8-sig: Excel's "CSV UTF-8" starts the file with a byte-order mark
            Path(path).read_bytes().decode("utf-8-sig", errors="surrogateescape"), newline=""))
        header = checked_header(path, next(reader, None), columns)
        found = {names[0] if isinstance(names, tuple) else names: named(names, header)
                 for names in columns}
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
                row = dict(zip(header, fields))
                rows.append({**row, **{key: row[name] for key, name in found.items()},
                             "line": line})
    except (OSError, csv.Error) as err:
        raise PipelineError(f"{path}: cannot read ({err})") from err
    return rows


def checked_header(path, header, columns):
    """A table's header, refused when there is none or it lacks one of `columns`."""
    missing = [" or ".join(names) if isinstance(names, tuple) else names
               for names in columns if named(names, header or []) is None]
    if not header or missing:
        raise PipelineError(f"{path}: cannot read (no header)" if not header
                            else f"{path}: missing column(s) {', '.join(missing)}")
    return header


def require_columns(path, columns):
    """Only the header of a CSV file, checked as read_rows checks it (for the check stage)."""
    try:
        with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as table:
            checked_header(path, next(csv.reader(table), None), columns)
    except (OSError, csv.Error) as err:
        raise PipelineError(f"{path}: cannot read ({err})") from err


def named(names, header):
    """The header's column of `names` (one name, or a tuple of alternatives), or None."""
    return next((name for name in (names if isinstance(names, tuple) else (names,))
                 if name in header), None)


def listed_twice(listed, name, table, line, skipped):
    """Whether `name` was listed on an earlier row of `table` (listed: name -> first line); a
    later row goes to `skipped`, as the first row of a file decides whatever a later one says."""
    first = listed.setdefault(name, line)
    if first == line:
        return False
    skipped.append({"path": f"{table}:{line}", "reason": f"{name} listed twice in"
                    f" {Path(table).name} (lines {first} and {line})"})
    return True


def listed_file(path, table, line, skipped):
    """Whether the file that `table`'s row at `line` lists is there; a missing one goes to
    `skipped` (a broken link is for the decoder)."""
    if present(path) or path.is_symlink():
        return True
    skipped.append({"path": str(path),
                    "reason": f"listed in {Path(table).name} line {line}, file missing"})
    return False
