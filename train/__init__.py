"""One program per experiment: `python -m train.NAME --help`."""
