"""``python -m neuralign.cli``."""

from neuralign.cli.app import _entry

if __name__ == "__main__":
    _entry()
