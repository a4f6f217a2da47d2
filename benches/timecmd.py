#!/usr/bin/env python3
"""Runs one command inside a network namespace and prints "WALL_MS USER_MS SYS_MS MAXRSS_KIB".

    timecmd.py [--mnt MOUNT_NS_FILE] [--reps N --undo SHELL_CMD] /run/netns/NAME CMD ARGS...

The namespace is entered here (setns) rather than through `ip netns exec` or nsenter, so that
their own start-up (ip netns exec remounts /sys) is not part of the measured time. Wall time is
from fork to wait4; user and system CPU time and peak RSS come from wait4's rusage of the
command alone. The command's output is discarded. With --reps, the command runs N times, each
followed by SHELL_CMD (untimed, e.g. the command's inverse), one output line per run: one Python
start-up for several short measurements. Exits non-zero if any run of the command fails.
"""
import ctypes
import os
import subprocess
import sys
import time

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000


def enter(namespaces):
    """[(path, CLONE_*)]: all files are opened first (paths as this mount namespace sees them)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fds = [(os.open(path, os.O_RDONLY), path, kind) for path, kind in namespaces]
    for fd, path, kind in fds:
        if libc.setns(fd, kind) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {path}: {os.strerror(err)}")
        os.close(fd)


def run(argv, devnull):
    """Runs argv once -> (wall ms, user ms, sys ms, max RSS KiB)."""
    t0 = time.monotonic_ns()
    pid = os.fork()
    if pid == 0:
        try:
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    _, status, ru = os.wait4(pid, 0)
    t1 = time.monotonic_ns()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(f"timecmd: {' '.join(argv)} exited with {code}")
    return (t1 - t0) / 1e6, ru.ru_utime * 1e3, ru.ru_stime * 1e3, ru.ru_maxrss


def main():
    args = sys.argv[1:]
    namespaces, reps, undo = [], 1, None
    while args[:1] in (["--mnt"], ["--reps"], ["--undo"]) and len(args) > 1:
        if args[0] == "--mnt":
            namespaces.append((args[1], CLONE_NEWNS))
        elif args[0] == "--reps":
            reps = int(args[1])
        else:
            undo = args[1]
        args = args[2:]
    if len(args) < 2:
        sys.exit("usage: timecmd.py [--mnt MOUNT_NS_FILE] [--reps N --undo SHELL_CMD] NETNS_PATH CMD [ARGS...]")
    namespaces.insert(0, (args[0], CLONE_NEWNET))
    enter(namespaces)
    argv = args[1:]
    devnull = os.open(os.devnull, os.O_WRONLY)
    for _ in range(reps):
        wall, user, sys_ms, rss = run(argv, devnull)
        print(f"{wall:.3f} {user:.3f} {sys_ms:.3f} {rss}", flush=True)
        if undo:
            subprocess.run(["sh", "-c", undo], stdout=devnull, stderr=devnull, check=False)


if __name__ == "__main__":
    main()
