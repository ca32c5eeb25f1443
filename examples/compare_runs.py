"""What the examples' run checks share (check_resume.py, check_threads.py): running an example and comparing
the files of two runs byte for byte, but for wall-clock fields (times in report.md, the `seconds` column of a
CSV file, a report's Timing section) and the thread count a report states."""

import csv
import io
import os
import re
import subprocess

TIMES = re.compile(r"\d+ min \d+ s|\d+(?:\.\d+)? (?:s|min)\b")
THREADS = re.compile(r"\b\d+ threads?\b|\bthreads: \d+")  # the reports say how many threads ran
TIMING_SECTION = re.compile(r"^## Timing\n.*?(?=^## |\Z)", re.M | re.S)  # a report's measured speeds


class CheckError(Exception):
    pass


def run(program, args, expect=0):
    result = subprocess.run([program, *args], capture_output=True, text=True, timeout=600)
    if result.returncode != expect:
        raise CheckError(f"'{' '.join(args)}': exit status {result.returncode}, expected {expect}\n"
                         f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return result.stdout, result.stderr


def files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, names in os.walk(root) for f in names)


def without_wall_clock(name, data):
    """The file's bytes, with wall-clock fields blanked (in a report also its Timing section and the thread count)."""
    if name.endswith(".md"):
        text = TIMING_SECTION.sub("## Timing\n<timing>\n", data.decode())
        return THREADS.sub("<threads>", TIMES.sub("<time>", text)).encode()
    if name.endswith(".csv"):
        rows = list(csv.reader(io.StringIO(data.decode(), newline="")))
        if rows and "seconds" in rows[0]:
            column = rows[0].index("seconds")
            out = io.StringIO(newline="")
            writer = csv.writer(out, lineterminator="\n")
            for i, row in enumerate(rows):
                writer.writerow(row if i == 0 or column >= len(row) else row[:column] + ["<time>"] + row[column + 1:])
            return out.getvalue().encode()
    return data


def require_same_files(a_dir, b_dir, a_name, b_name):
    """Raises CheckError unless both folders hold the same files with the same bytes; returns their count."""
    a, b = files(a_dir), files(b_dir)
    if a != b:
        raise CheckError(f"different files: {a_name} {a}, {b_name} {b}")
    for name in a:
        with open(os.path.join(a_dir, name), "rb") as f:
            x = without_wall_clock(name, f.read())
        with open(os.path.join(b_dir, name), "rb") as f:
            y = without_wall_clock(name, f.read())
        if x != y:
            raise CheckError(f"{name} differs between the {a_name} and the {b_name} run")
    return len(a)
