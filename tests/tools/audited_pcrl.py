"""Run ``pcrl <argv>`` with an audit hook that logs every file the process opens or writes.

Usage: ``python audited_pcrl.py LOG -- <pcrl arguments>``. Each line of LOG is
``<kind>\t<absolute path>``: ``read`` or ``write`` for ``open`` / ``os.open``
(io.open_code included, so imported modules show as their source or .pyc files), and
``write`` for the destination of os.rename / os.replace, ``mkdir`` for os.mkdir, and
``write`` for os.remove / os.rmdir / shutil.rmtree. Calls relative to a directory file
descriptor (shutil.rmtree walking the tree it was asked to delete) are left out: their
paths cannot be resolved, and the rmtree event itself names the tree. The hook is
inherited by forked DataLoader workers (the log is opened once and appended to with
os.write, which raises no audit event).
"""

from __future__ import annotations

import os
import sys

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def main() -> int:
    log_path, sep, *argv = sys.argv[1:]
    assert sep == "--", "usage: audited_pcrl.py LOG -- <pcrl arguments>"
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def record(kind: str, path: object) -> None:
        if isinstance(path, (str, bytes, os.PathLike)):
            text = os.fsdecode(path)
            os.write(fd, f"{kind}\t{os.path.abspath(text)}\n".encode())

    def hook(event: str, args: tuple) -> None:
        if event == "open" and args:
            path, mode, flags = (list(args) + [None, None])[:3]
            if mode is None and isinstance(flags, int) and flags & getattr(os, "O_DIRECTORY", 0):
                return  # a folder opened to walk it, not a file read
            if mode is None and isinstance(path, str) and os.sep not in path:
                return  # os.open(name, dir_fd=...) of shutil.rmtree: not resolvable here
            writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or \
                (mode is None and isinstance(flags, int) and flags & WRITE_FLAGS)
            record("write" if writes else "read", path)
        elif event in ("os.rename", "os.replace") and len(args) >= 2:
            if len(args) < 4 or args[3] in (None, -1):  # (src, dst, src_dir_fd, dst_dir_fd)
                record("write", args[1])
        elif event == "os.mkdir" and args:
            if args[-1] in (None, -1):  # (path, mode, dir_fd)
                record("mkdir", args[0])
        elif event in ("os.remove", "os.rmdir") and args:
            if args[-1] in (None, -1):  # (path, dir_fd)
                record("write", args[0])
        elif event == "shutil.rmtree" and args:
            record("write", args[0])

    sys.addaudithook(hook)
    from pcrl.cli import main as pcrl_main

    return pcrl_main(argv)


if __name__ == "__main__":
    sys.exit(main())
