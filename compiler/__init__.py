"""The dlc compiler: graph IR, op registry, elaboration with shape checking, reports, the CLI."""
__version__ = "0.1.0"
