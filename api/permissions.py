from typing import Any

from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request


def is_operator(user: Any) -> bool:
    """Staff operators may change things; other signed-in accounts are read-only viewers."""
    return bool(user and user.is_authenticated and user.is_active and user.is_staff)


class IsOperatorOrReadOnly(BasePermission):
    message = "Only staff operators may change data; viewers have read-only access."

    def has_permission(self, request: Request, view: Any) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        return request.method in SAFE_METHODS or is_operator(request.user)


class IsOperator(BasePermission):
    message = "Only staff operators may do this."

    def has_permission(self, request: Request, view: Any) -> bool:
        return is_operator(request.user)
