class ConvertError(ValueError):
    """A model the converter cannot convert: says which node, which op, and what to do."""

    @classmethod
    def at(cls, node, problem, hint=None):
        msg = "%s node %r: %s" % (node.op, node.name, problem)
        if hint:
            msg += " (hint: %s)" % hint
        return cls(msg)
