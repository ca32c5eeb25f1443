#!/usr/bin/env python3
"""Checks that an interrupted `expert_load_heatmaps --preset smoke` run, resumed, ends with the outputs of
one never interrupted.

Runs the smoke preset straight into WORK/straight; then into WORK/resumed in three invocations: --max-steps 5
(stops within the first model), --resume --max-steps 10 (resumes the first model at step 5, finishes it,
stops the second at its step 3), --resume (resumes the second; the first, whose checkpoint is of its last
step, is evaluated again). Every file must be the same bytes, but for the wall times in report.md; the
checkpoints must be gone at the end; a finished run cannot be resumed.

Usage: check_resume.py PROGRAM DATA_DIR WORK_DIR
"""

import os
import re
import shutil
import subprocess
import sys

TIMES = re.compile(r"\d+ min \d+ s|\d+(\.\d+)? s\b")


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


def check(program, data_dir, work):
    straight, resumed = os.path.join(work, "straight"), os.path.join(work, "resumed")
    for d in (straight, resumed):
        shutil.rmtree(d, ignore_errors=True)
    run(program, ["--preset", "smoke", "--data-dir", data_dir, "--out", straight])

    out, _ = run(program, ["--preset", "smoke", "--data-dir", data_dir, "--out", resumed, "--max-steps", "5"])
    if "aux_loss_based: stopped at step 5" not in out or "--resume" not in out:
        raise CheckError(f"--max-steps 5: no 'stopped at step 5 ... --resume' in the output:\n{out[-1000:]}")
    if not os.path.isfile(os.path.join(resumed, "checkpoints", "aux_loss_based.ck")):
        raise CheckError("--max-steps 5 left no checkpoint in checkpoints/")
    out, _ = run(program, ["--resume", resumed, "--max-steps", "10"])
    if "aux_loss_based: resumed from" not in out or "aux_loss_free: stopped at step 3" not in out:
        raise CheckError(f"--resume --max-steps 10: expected the first model resumed and the second stopped at "
                         f"step 3:\n{out[-1000:]}")
    out, _ = run(program, ["--resume", resumed])
    if "aux_loss_free: resumed from" not in out:
        raise CheckError(f"--resume: the second model was not resumed:\n{out[-1000:]}")

    if os.path.exists(os.path.join(resumed, "checkpoints")):
        raise CheckError("the finished run left checkpoints/")
    a, b = files(straight), files(resumed)
    if a != b:
        raise CheckError(f"different files: straight {a}, resumed {b}")
    for name in a:
        with open(os.path.join(straight, name), "rb") as f:
            x = f.read()
        with open(os.path.join(resumed, name), "rb") as f:
            y = f.read()
        if name == "report.md":
            x, y = (TIMES.sub("<time>", t.decode()) for t in (x, y))
        if x != y:
            raise CheckError(f"{name} differs between the straight and the resumed run")

    _, err = run(program, ["--resume", straight], expect=1)
    if not err.startswith("error:") or "checkpoints" not in err:
        raise CheckError(f"--resume of a finished run: {err.strip()!r}")
    print(f"{len(a)} files of the resumed run are those of the straight run (report.md but for wall times)")


def main(argv):
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        check(*argv[1:])
    except (CheckError, subprocess.TimeoutExpired) as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
