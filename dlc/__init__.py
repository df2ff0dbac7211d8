"""dlc: a compiler for deep-learning models written in the .dln language.

    import dlc
    checked = dlc.check("lenet5")          # a zoo model by name, or a path to a .dln file
    print(dlc.summary(checked.graph))
"""
from compiler import __version__
from compiler.check import Checked, check
from compiler.report import summary, to_dot

__all__ = ["__version__", "check", "Checked", "summary", "to_dot"]
