"""``ppl_vae.cli`` for ``torchrun``, recording on every rank but 0 each file it opens for writing, creates, renames or
removes under the directory ``$PPL_VAE_AUDIT_RUN`` (Python's audit hooks see every ``open``, ``os.open``,
``os.replace``, ...), written to ``$PPL_VAE_AUDIT_OUT/rank<r>.json`` at exit. Not a test module: started by
``tests/training/test_data_parallel.py``."""
import json
import os
import sys
from pathlib import Path

from ppl_vae.cli import main

WRITES = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
CHANGES = ("os.rename", "os.replace", "os.remove", "os.unlink", "os.mkdir", "os.rmdir", "os.truncate", "shutil.rmtree",
           "os.symlink", "os.link", "os.chmod", "os.utime")


def main_audited() -> int:
    run = os.path.realpath(os.environ["PPL_VAE_AUDIT_RUN"])
    rank = os.environ.get("RANK", "0")
    seen = []

    def inside(path) -> bool:
        return isinstance(path, (str, bytes, os.PathLike)) and os.path.realpath(os.fsdecode(path)).startswith(run)

    def hook(event, args):
        if event == "open" and inside(args[0]):
            path, mode, flags = args
            if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (isinstance(flags, int) and flags & WRITES):
                seen.append([event, os.fsdecode(path)])
        elif event in CHANGES and args and inside(args[0]):
            seen.append([event, os.fsdecode(args[0])])

    if rank != "0":
        sys.addaudithook(hook)
    status = main(sys.argv[1:])
    record = list(seen)
    Path(os.environ["PPL_VAE_AUDIT_OUT"], f"rank{rank}.json").write_text(json.dumps(record))
    return status


if __name__ == "__main__":
    sys.exit(main_audited())
