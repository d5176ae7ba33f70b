"""voxserve: a self-hosted, OpenAI-compatible speech server that is fast and shows its speed."""

from importlib.metadata import version

__version__ = version("voxserve")
