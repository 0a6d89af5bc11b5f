"""`playlog ctl`: an operator's command line over playlog's gRPC API."""

from playlog.ctl.main import main

__all__ = ["main"]
