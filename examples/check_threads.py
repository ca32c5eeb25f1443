#!/usr/bin/env python3
"""Checks that an example's smoke run writes the same files at 1 and at 2 threads (--threads), byte for byte
but for wall-clock fields: the library's results do not depend on the thread count.

Usage: check_threads.py PROGRAM WORK_DIR [ARGS...]   (ARGS are passed to both runs, e.g. --data-dir DIR)
"""

import os
import shutil
import subprocess
import sys

from compare_runs import CheckError, require_same_files, run


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    program, work, extra = argv[1], argv[2], argv[3:]
    outs = {threads: os.path.join(work, f"threads{threads}") for threads in (1, 2)}
    try:
        for threads, out in outs.items():
            shutil.rmtree(out, ignore_errors=True)
            run(program, ["--preset", "smoke", "--out", out, "--threads", str(threads), *extra])
        count = require_same_files(outs[1], outs[2], "1-thread", "2-thread")
    except (CheckError, subprocess.TimeoutExpired) as e:
        print(f"FAIL: {e}", file=sys.stderr)
        return 1
    print(f"{count} files of the 1-thread and the 2-thread run are the same bytes (but for wall-clock fields)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
