"""The `tessera-run` command installed with the package: runs the tessera-run binary shipped beside it."""
import os
import sys


def main() -> None:
    binary = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tessera-run")
    os.execv(binary, [binary] + sys.argv[1:])


if __name__ == "__main__":
    main()
