"""inspector: Kafka-native visual inspection for factory lines."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("inspector")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+src"
