"""dlc: a compiler for deep-learning models written in the .dln language.

    import dlc
    checked = dlc.check("lenet5")          # a zoo model by name, or a path to a .dln file
    print(dlc.summary(checked.graph))
    model = dlc.load("mlp")                # then model.fit(x, y), model.evaluate(x, y), model.predict(x)
"""
from compiler import __version__
from compiler.check import Checked, check
from compiler.report import summary, to_dot
__all__ = ["__version__", "check", "Checked", "summary", "to_dot", "Model", "load"]


def __getattr__(name):
    # The runtime (NumPy interpreter, training) loads only when used, so `dlc check` starts fast.
    if name in ("Model", "load"):
        from runtime import model
        return getattr(model, name)
    raise AttributeError(name)
