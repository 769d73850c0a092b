"""The precision vocabulary, one place for every layer: what a tensor can be quantized to, and
what a whole backbone's precision means for its convs' weights and activations."""

#: the precision of one tensor (a conv's weights or its input); also the choices for a head or neck
KINDS = ("fp32", "int8", "binary")

#: a backbone's precision -> (weight kind, activation kind) of every conv in its four stages
PRECISIONS = {
    "binary": ("binary", "binary"),
    "binary-weights": ("binary", "fp32"),
    "binary-activations": ("fp32", "binary"),
    "int8": ("int8", "int8"),
    "fp32": ("fp32", "fp32"),
}


def kinds(precision: str) -> tuple[str, str]:
    """(weight kind, activation kind) of backbone precision ``precision``; ValueError naming the known ones."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {sorted(PRECISIONS)}")
    return PRECISIONS[precision]


def uniform_kind(precision: str) -> str | None:
    """The one kind of a backbone whose weights and activations share it ('binary', 'int8', 'fp32');
    None for the mixed ablation precisions (binary weights with float activations, or the reverse)."""
    w, a = kinds(precision)
    return w if w == a else None
