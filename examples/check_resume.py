#!/usr/bin/env python3
"""Checks that an example's run, stopped with --max-steps and resumed with --resume (examples/common/resume.hpp),
ends with the files of a run never stopped.

Runs `PROGRAM --preset smoke` straight into WORK/straight; then into WORK/resumed in pieces: the first
invocation with --max-steps, each next one with --resume WORK/resumed --max-steps, the step counts taken in
turn from STEPS (so that the stops fall within epochs, on the boundaries of trials and models, and right
after a resume), until an invocation finishes the run. Every file of the two runs must be the same bytes,
but for wall-clock fields: times in report.md and the `seconds` column of a CSV file. The finished run must
have removed its checkpoints and refuse --resume; --resume of another program's run must be an error that
names that program.

Usage: check_resume.py PROGRAM WORK_DIR [--data-dir DIR]
"""

import csv
import io
import os
import re
import shutil
import subprocess
import sys

STEPS = (3, 7, 1, 10)
MAX_INVOCATIONS = 200
TIMES = re.compile(r"\d+ min \d+ s|\d+(?:\.\d+)? (?:s|min)\b")
STOPPED = re.compile(r"^(\S+): stopped at step (\d+) of (\d+) \(--max-steps\); continue with: .* --resume ", re.M)
RESUMED = re.compile(r"^(\S+): resumed at step (\d+) from ", re.M)


class CheckError(Exception):
    pass


def run(program, args, expect=0):
    result = subprocess.run([program, *args], capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, OMP_WAIT_POLICY="PASSIVE"))
    if result.returncode != expect:
        raise CheckError(f"'{' '.join(args)}': exit status {result.returncode}, expected {expect}\n"
                         f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return result.stdout, result.stderr


def files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, names in os.walk(root) for f in names)


def without_wall_clock(name, data):
    """The file's bytes, with wall-clock fields blanked."""
    if name.endswith(".md"):
        return TIMES.sub("<time>", data.decode()).encode()
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


def run_in_pieces(program, out, fresh_args):
    """Runs to the end in invocations of STEPS steps each; returns the (unit, step, of) of every stop."""
    stops, resumes = [], []
    for i in range(MAX_INVOCATIONS):
        steps = str(STEPS[i % len(STEPS)])
        args = fresh_args if i == 0 else ["--resume", out]
        stdout, _ = run(program, [*args, "--max-steps", steps])
        resumes += RESUMED.findall(stdout)
        stop = STOPPED.findall(stdout)
        if not stop:
            return stops, resumes
        stops += [(unit, int(step), int(of)) for unit, step, of in stop]
        if not os.path.isfile(os.path.join(out, "checkpoints", "run.txt")):
            raise CheckError(f"invocation {i + 1} stopped ({stop}) but left no checkpoints/run.txt")
    raise CheckError(f"the run did not finish in {MAX_INVOCATIONS} invocations")


def check(program, work, data_args):
    straight, resumed, other = (os.path.join(work, d) for d in ("straight", "resumed", "other"))
    for d in (straight, resumed, other):
        shutil.rmtree(d, ignore_errors=True)
    run(program, ["--preset", "smoke", "--out", straight, *data_args])
    stops, resumes = run_in_pieces(program, resumed, ["--preset", "smoke", "--out", resumed, *data_args])
    if not any(0 < step < of for _, step, of in stops):
        raise CheckError(f"no invocation stopped within a training: {stops}")
    if not resumes:
        raise CheckError(f"no training was resumed from a checkpoint (stops: {stops})")
    print(f"{len(stops) + 1} invocations; stopped at {', '.join(f'{u} {s}/{n}' for u, s, n in stops)}")

    if os.path.exists(os.path.join(resumed, "checkpoints")):
        raise CheckError("the finished run left checkpoints/")
    a, b = files(straight), files(resumed)
    if a != b:
        raise CheckError(f"different files: straight {a}, resumed {b}")
    for name in a:
        with open(os.path.join(straight, name), "rb") as f:
            x = without_wall_clock(name, f.read())
        with open(os.path.join(resumed, name), "rb") as f:
            y = without_wall_clock(name, f.read())
        if x != y:
            raise CheckError(f"{name} differs between the straight and the resumed run")

    _, err = run(program, ["--resume", straight], expect=1)
    if not err.startswith("error:") or "checkpoints" not in err:
        raise CheckError(f"--resume of a finished run: {err.strip()!r}")
    os.makedirs(os.path.join(other, "checkpoints"))
    with open(os.path.join(other, "checkpoints", "run.txt"), "w") as f:
        f.write("another_program run\npreset smoke\nseed 1\ndata_dir data\n")
    _, err = run(program, ["--resume", other], expect=1)
    if not err.startswith("error:") or "another_program" not in err:
        raise CheckError(f"--resume of another program's run: {err.strip()!r}")
    print(f"{len(a)} files of the resumed run are those of the straight run (but for wall-clock fields)")


def main(argv):
    if len(argv) not in (3, 5) or (len(argv) == 5 and argv[3] != "--data-dir"):
        print(__doc__, file=sys.stderr)
        return 2
    try:
        check(argv[1], argv[2], argv[3:])
    except (CheckError, subprocess.TimeoutExpired) as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
