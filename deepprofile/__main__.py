"""``python -m deepprofile``: the command line, the same as the ``deepprofile`` script."""

from deepprofile.cli import main

if __name__ == "__main__":
    main()
