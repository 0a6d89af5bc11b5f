"""playlog: the runtime authority for what broadcast channels air."""

__version__ = "0.1.0"
