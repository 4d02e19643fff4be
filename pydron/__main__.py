"""`python -m pydron ...`: see pydron.cli."""

from pydron.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
