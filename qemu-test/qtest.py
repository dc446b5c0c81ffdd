"""Helpers shared by the qemu-test scripts (test-*.py)."""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


class Fail(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Fail(msg)


def sections(out):
    """A guest's output split at lines '=== NAME': {NAME: [lines]}."""
    cur, secs = None, {}
    for line in out.splitlines():
        if line.startswith("=== "):
            cur = line[4:]
            secs[cur] = []
        elif cur is not None:
            secs[cur].append(line)
    return secs


def build_guest(build, iotracer, iowork):
    """Builds (or reuses) the guest with these binaries; None, or the build's output on failure."""
    b = subprocess.run([os.path.join(HERE, "build-guest.sh"), build, iotracer, iowork], capture_output=True,
                       text=True)
    return None if b.returncode == 0 else b.stdout + b.stderr


def guest_args(doc):
    """The command line BUILD_DIR IOTRACER IOWORK of a test script, with its guest built.

    Returns (build, iotracer, iowork), or the exit code to return (2 usage, 1 build failed)."""
    if len(sys.argv) != 4:
        print(doc)
        return 2
    build, iotracer, iowork = sys.argv[1:]
    err = build_guest(build, iotracer, iowork)
    if err:
        print(err)
        print("FAIL: building the guest failed")
        return 1
    return build, iotracer, iowork
