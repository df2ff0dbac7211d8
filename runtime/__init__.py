"""What a user embeds: load a model, run and train it. The front end's entry point is re-exported here;
execution (the NumPy reference interpreter, training, compiled backends) builds on it."""
from compiler.check import Checked, check

__all__ = ["check", "Checked"]
