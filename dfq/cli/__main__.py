"""``python -m dfq.cli``: the same entry point as the ``dfq`` console script."""

from dfq.cli import main

if __name__ == "__main__":
    main()
