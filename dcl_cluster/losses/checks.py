"""Range checks of the objectives' settings, in one place.

Settings (temperatures, ``tau+``, exponents) are checked where a loss is called or a term
is built. Checks of tensor *values* (a per-anchor ``tau+``, a prior) need the host to read
the tensor, a sync that stalls a GPU pipeline every step: a standalone call checks them,
and the training module, which builds those tensors in range, turns them off with
:func:`tensor_value_checks`.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator

__all__ = ["check_temperature", "check_tau_plus", "check_beta", "check_size_exponent", "check_positive",
           "tensor_value_checks", "tensor_value_checks_enabled"]

_VALUE_CHECKS = contextvars.ContextVar("dcl_cluster_tensor_value_checks", default=True)


@contextlib.contextmanager
def tensor_value_checks(enabled: bool) -> Iterator[None]:
    """Turn the value checks of tensor arguments on or off inside the block (shapes are
    always checked).

    Examples:
        >>> import torch
        >>> from dcl_cluster.losses import debiased_contrastive_loss
        >>> z = torch.randn(4, 8)
        >>> with tensor_value_checks(False):  # no host sync for the per-anchor tau+
        ...     float(debiased_contrastive_loss(z, z, tau_plus=torch.full((8,), 0.1))) > 0
        True
    """
    token = _VALUE_CHECKS.set(bool(enabled))
    try:
        yield
    finally:
        _VALUE_CHECKS.reset(token)


def tensor_value_checks_enabled() -> bool:
    """Whether tensor arguments' values are checked (True unless :func:`tensor_value_checks` says not)."""
    return _VALUE_CHECKS.get()


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_positive(name: str, value: float) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number > 0."""
    if not _is_number(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def check_temperature(temperature: float) -> None:
    """Raise ``ValueError`` unless ``temperature`` is a finite number > 0."""
    check_positive("temperature", temperature)


def check_tau_plus(tau_plus: float, name: str = "tau_plus") -> None:
    """Raise ``ValueError`` unless a float ``tau_plus`` lies in [0, 1)."""
    if not _is_number(tau_plus) or not 0 <= tau_plus < 1:
        raise ValueError(f"{name} must be in [0, 1), got {tau_plus!r}")


def check_beta(beta: float) -> None:
    """Raise ``ValueError`` unless ``beta`` is a finite number >= 0."""
    if not _is_number(beta) or beta < 0:
        raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")


def check_size_exponent(size_exponent: float) -> None:
    """Raise ``ValueError`` unless ``size_exponent`` is a finite number >= 0."""
    if not _is_number(size_exponent) or size_exponent < 0:
        raise ValueError(f"size_exponent must be a finite number >= 0, got {size_exponent!r}")
