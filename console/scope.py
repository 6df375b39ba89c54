"""Who may see what: the one rule for every page, API answer and download."""

from __future__ import annotations

from slawatch.model import User


def sees_everything(user: User) -> bool:
    return user.role in ("admin", "operator")


def may_see(user: User, customer: str | None) -> bool:
    """Whether `user` may see anything of `customer` (None or "": a component without a customer).

    Admins and operators see everything; a customer account only the customers listed on it, and never what
    belongs to no customer.
    """
    if sees_everything(user):
        return True
    return bool(customer) and customer in user.customers


def may_act(user: User) -> bool:
    """Whether `user` may change anything (act on incidents, add or remove maintenance): admins and operators.
    A customer account only looks: what it asks for goes through the provider, who acts and is named for it."""
    return sees_everything(user)
