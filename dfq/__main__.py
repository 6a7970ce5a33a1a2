"""``python -m dfq`` (and ``torchrun ... -m dfq``): the ``dfq`` command line (:func:`dfq.cli.main`)."""

from dfq.cli import main

if __name__ == "__main__":
    main()
