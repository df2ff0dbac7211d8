"""What a user embeds: load a model and run or train it (`runtime.model`), on the NumPy reference
interpreter (`runtime.interpreter`) that defines what every graph computes; initial weights
(`runtime.initializers`), the optimizer step as a graph (`runtime.optim`), data sets (`runtime.data`) and
metrics (`runtime.metrics`)."""
from compiler.check import Checked, check

__all__ = ["check", "Checked"]
