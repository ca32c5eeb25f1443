#!/usr/bin/env python3
"""Checks an example's command line (examples/common/cli.hpp) and how its main ends on errors.

--help lists the shared options with their defaults and exits 0. An unknown option, a bad value, a missing
data directory (for a program that reads data), an --out that cannot be created (under /proc, under a
regular file), --resume of a directory that holds no run (a resumable program; examples/check_resume.py
checks the resuming itself), --resume beside an option of the run it resumes, and --resume where the program
cannot resume each end in exit status 1 and a message on stderr that starts with `error:` and names the
option or the path; never a crash (`terminate called`, exit 134).

Usage: check_cli.py PROGRAM NAME [--reads-data] [--resumable]
"""

import os
import re
import subprocess
import sys
import tempfile


class CheckError(Exception):
    pass


def run(program, args, cwd):
    result = subprocess.run([program, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    return result.returncode, result.stdout, result.stderr


def expect_error(program, args, cwd, *names):
    """`program args` exits 1 with a message that starts with `error:` and contains every one of `names`."""
    code, _, err = run(program, args, cwd)
    shown = " ".join(args)
    if code != 1:
        raise CheckError(f"'{shown}': exit status {code}, expected 1; stderr: {err.strip()!r}")
    if not err.startswith("error:"):
        raise CheckError(f"'{shown}': stderr does not start with 'error:': {err.strip()!r}")
    for name in names:
        if name not in err:
            raise CheckError(f"'{shown}': the message does not name {name!r}: {err.strip()!r}")
    print(f"ok   {shown}: {err.splitlines()[0]}")


def check(program, name, reads_data, resumable):
    with tempfile.TemporaryDirectory() as tmp:
        code, out, err = run(program, ["--help"], tmp)
        if code != 0:
            raise CheckError(f"--help: exit status {code}, expected 0; stderr: {err.strip()!r}")
        expected = [r"--preset NAME:\{[a-z,]+\}=\w+", rf"--out DIR=out/{name}\b", r"--seed N=1\b", r"--threads N=0\b"]
        if reads_data:
            expected.append(r"--data-dir DIR=data\b")
        if resumable:
            expected += [r"--resume DIR\b", r"--max-steps N=0\b"]
        for pattern in expected:
            if not re.search(pattern, out):
                raise CheckError(f"--help does not list /{pattern}/:\n{out}")
        print(f"ok   --help lists {len(expected)} shared options with their defaults")

        expect_error(program, ["--bogus"], tmp, "--bogus")
        expect_error(program, ["--threads", "abc"], tmp, "--threads", "abc")
        expect_error(program, ["--seed", "-3"], tmp, "--seed", "-3")
        expect_error(program, ["--preset", "nope"], tmp, "--preset", "nope", "smoke")

        # An --out that cannot be made: under /proc, and under a regular file.
        expect_error(program, ["--out", "/proc/moe-out"], tmp, "--out", "/proc/moe-out")
        regular = os.path.join(tmp, "a-file")
        with open(regular, "w") as f:
            f.write("not a directory\n")
        expect_error(program, ["--out", os.path.join(regular, "out")], tmp, "--out", os.path.join(regular, "out"))

        if reads_data:
            missing = os.path.join(tmp, "no-such-data")
            expect_error(program, ["--data-dir", missing, "--out", os.path.join(tmp, "out")], tmp, missing)

        empty = os.path.join(tmp, "empty")
        os.mkdir(empty)
        if resumable:  # nothing to resume in an empty directory: names what it looked for
            expect_error(program, ["--resume", empty], tmp, "--resume", os.path.join(empty, "checkpoints"))
            expect_error(program, ["--resume", empty, "--seed", "3"], tmp, "--resume", "--seed")
            expect_error(program, ["--max-steps", "-1"], tmp, "--max-steps", "-1")
        else:
            expect_error(program, ["--resume", empty], tmp, "--resume", name)


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        check(argv[1], argv[2], "--reads-data" in argv[3:], "--resumable" in argv[3:])
    except (CheckError, subprocess.TimeoutExpired) as e:
        print(f"FAIL {argv[2]}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
