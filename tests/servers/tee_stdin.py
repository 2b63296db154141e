"""Runs a server with every byte of its stdin also written to a file:
`tee_stdin.py LOG -- COMMAND...`. Tests read LOG to see exactly what the
gateway sent the server, byte for byte."""

from __future__ import annotations

import subprocess
import sys
import threading


def main() -> None:
    log_path, sep, *command = sys.argv[1:]
    assert sep == "--" and command, "usage: tee_stdin.py LOG -- COMMAND..."
    child = subprocess.Popen(command, stdin=subprocess.PIPE)
    assert child.stdin is not None

    def pump() -> None:
        with open(log_path, "ab", buffering=0) as log:
            while True:
                chunk = sys.stdin.buffer.read1(65536)
                if not chunk:
                    break
                log.write(chunk)
                child.stdin.write(chunk)
                child.stdin.flush()
        child.stdin.close()

    threading.Thread(target=pump, daemon=True).start()
    sys.exit(child.wait())


if __name__ == "__main__":
    main()
