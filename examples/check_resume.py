#!/usr/bin/env python3
"""Checks that an example's run, stopped and resumed with --resume (examples/common/resume.hpp), ends with the
files of a run never stopped.

Runs `PROGRAM --preset smoke` straight into WORK/straight (timed). Then, into WORK/resumed, in pieces: the first
invocation with --max-steps, each next one with --resume WORK/resumed --max-steps, the step counts taken in turn
from STEPS (so that the stops fall within epochs, on the boundaries of trials and models, and right after a
resume), until an invocation finishes the run. Then, into WORK/killed, invocations killed with SIGKILL at random
moments of the straight run's duration (as a crash or an out-of-memory kill would; the moments come from --seed
and are printed), each next one resuming (or starting afresh if it was killed before the run's state was
written), until one finishes. Every file of the three runs must be the same bytes, but for wall-clock fields. The
finished run must have removed its checkpoints and refuse --resume; --resume of another program's run must be an
error that names that program.

Usage: check_resume.py PROGRAM WORK_DIR [--data-dir DIR] [--kills N] [--seed S]
"""

import argparse
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

from compare_runs import CheckError, require_same_files, run

STEPS = (3, 7, 1, 10)
MAX_INVOCATIONS = 200
STOPPED = re.compile(r"^(\S+): stopped at step (\d+) of (\d+) \(--max-steps\); continue with: .* --resume ", re.M)
RESUMED = re.compile(r"^(\S+): resumed at step (\d+) from ", re.M)


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


def run_killed(program, out, fresh_args, kills, duration, rng):
    """Runs to the end, killing the first `kills` invocations at random moments; returns the moments of the kills
    that hit a running process and the resumes printed after them."""
    killed_at, resumes = [], []
    for i in range(MAX_INVOCATIONS):
        started = os.path.isfile(os.path.join(out, "checkpoints", "run.txt"))
        args = ["--resume", out] if started else fresh_args
        process = subprocess.Popen([program, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if i < kills:
            moment = rng.uniform(0.0, duration)
            try:
                process.wait(timeout=moment)
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGKILL)
                killed_at.append(round(moment, 3))
        stdout, stderr = process.communicate(timeout=600)
        resumes += RESUMED.findall(stdout)
        if process.returncode == -signal.SIGKILL:
            continue
        if process.returncode != 0:
            raise CheckError(f"invocation {i + 1} ('{' '.join(args)}') after kills at {killed_at} s: exit status "
                             f"{process.returncode}\n{stdout[-2000:]}\n{stderr[-2000:]}")
        return killed_at, resumes
    raise CheckError(f"the run did not finish in {MAX_INVOCATIONS} invocations")


def check(program, work, data_args, kills, seed):
    straight, resumed, killed, other = (os.path.join(work, d) for d in ("straight", "resumed", "killed", "other"))
    for d in (straight, resumed, killed, other):
        shutil.rmtree(d, ignore_errors=True)
    began = time.monotonic()
    run(program, ["--preset", "smoke", "--out", straight, *data_args])
    duration = time.monotonic() - began

    stops, resumes = run_in_pieces(program, resumed, ["--preset", "smoke", "--out", resumed, *data_args])
    if not any(0 < step < of for _, step, of in stops):
        raise CheckError(f"no invocation stopped within a training: {stops}")
    if not resumes:
        raise CheckError(f"no training was resumed from a checkpoint (stops: {stops})")
    print(f"{len(stops) + 1} invocations; stopped at {', '.join(f'{u} {s}/{n}' for u, s, n in stops)}")
    if os.path.exists(os.path.join(resumed, "checkpoints")):
        raise CheckError("the finished run left checkpoints/")
    count = require_same_files(straight, resumed, "straight", "resumed")
    print(f"{count} files of the resumed run are those of the straight run (but for wall-clock fields)")

    if kills > 0:
        killed_at, resumes = run_killed(program, killed, ["--preset", "smoke", "--out", killed, *data_args], kills,
                                        duration, random.Random(seed))
        print(f"killed at {killed_at} s of a {duration:.2f}-s run (--seed {seed}); "
              f"{len(resumes)} resumed from a checkpoint")
        if os.path.exists(os.path.join(killed, "checkpoints")):
            raise CheckError("the finished run left checkpoints/")
        require_same_files(straight, killed, "straight", "killed")
        print(f"{count} files of the killed and resumed run are those of the straight run")

    _, err = run(program, ["--resume", straight], expect=1)
    if not err.startswith("error:") or "checkpoints" not in err:
        raise CheckError(f"--resume of a finished run: {err.strip()!r}")
    os.makedirs(os.path.join(other, "checkpoints"))
    with open(os.path.join(other, "checkpoints", "run.txt"), "w") as f:
        f.write("another_program run\npreset smoke\nseed 1\ndata_dir data\n")
    _, err = run(program, ["--resume", other], expect=1)
    if not err.startswith("error:") or "another_program" not in err:
        raise CheckError(f"--resume of another program's run: {err.strip()!r}")


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("program")
    parser.add_argument("work_dir")
    parser.add_argument("--data-dir")
    parser.add_argument("--kills", type=int, default=3, help="invocations killed with SIGKILL (default 3; 0: none)")
    parser.add_argument("--seed", type=int, default=1, help="chooses the moments of the kills")
    args = parser.parse_args(argv[1:])
    data_args = ["--data-dir", args.data_dir] if args.data_dir else []
    try:
        check(args.program, args.work_dir, data_args, args.kills, args.seed)
    except (CheckError, subprocess.TimeoutExpired) as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
