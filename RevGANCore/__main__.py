"""``python -m RevGANCore`` is the same as the ``revgan`` command."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
