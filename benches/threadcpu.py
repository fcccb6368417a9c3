#!/usr/bin/env python3
"""CPU seconds of each thread of a command, for benches/run.sh.

    python3 benches/threadcpu.py OUT CMD ARGS...

Runs CMD with stdout to OUT and prints one line: "wall total main t1 t2 ...", the wall clock,
the process's exact CPU time (user + system, from wait4), then the CPU seconds of the main
thread and of every other thread in the order they were created (by thread id). A thread's time
is its scheduler run time (/proc/PID/task/TID/schedstat, in nanoseconds), sampled every 5 ms
while the command runs. The last few milliseconds of each thread fall between samples, so the
threads' times are scaled to sum to the exact total.
"""
import os
import sys
import time


def sample(pid, seen):
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
                seen[int(tid)] = int(fh.read().split()[0]) / 1e9
        except (OSError, ValueError, IndexError):
            pass


def main():
    if len(sys.argv) < 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    out, cmd = sys.argv[1], sys.argv[2:]
    start = time.monotonic()
    with open(out, "wb") as fh, open(os.devnull, "wb") as null:
        pid = os.fork()
        if pid == 0:
            os.dup2(fh.fileno(), 1)
            os.dup2(null.fileno(), 2)
            try:
                os.execvp(cmd[0], cmd)
            finally:
                os._exit(127)
    seen = {}
    # Bounded by the command itself: the loop ends when it exits.
    while True:
        done, _, usage = os.wait4(pid, os.WNOHANG)
        if done:
            break
        sample(pid, seen)
        time.sleep(0.005)
    wall = time.monotonic() - start
    total = usage.ru_utime + usage.ru_stime
    polled = sum(seen.values())
    scale = total / polled if polled > 0 else 0
    main_s = seen.pop(pid, 0) * scale
    others = [seen[t] * scale for t in sorted(seen)]
    print(" ".join(f"{x:.4f}" for x in [wall, total, main_s] + others))
    return 0


if __name__ == "__main__":
    sys.exit(main())
