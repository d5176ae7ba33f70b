"""`python -m voxserve.cli`: the same as the `voxserve` script."""

from voxserve.cli import app

if __name__ == "__main__":
    app()
