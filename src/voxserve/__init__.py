"""voxserve: a self-hosted, OpenAI-compatible speech server that is fast and shows its speed."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("voxserve")
except PackageNotFoundError:  # run from a source tree, e.g. the GPU benchmark on a machine without the package
    __version__ = "0+source"
