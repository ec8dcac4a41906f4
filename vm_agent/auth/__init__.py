"""Authentication: JWTs validated against the control plane's JWKS, and login cookies.

The one entry point for handlers is `authenticate(request, ...)`, which returns a `Principal`
or raises 401/403/503. Only this package imports `jwt`.
"""

from vm_agent.auth.authenticator import Authenticator, authenticate, login, set_login_cookies
from vm_agent.auth.principal import MANAGEMENT, USER, Principal

__all__ = ["MANAGEMENT", "USER", "Authenticator", "Principal", "authenticate", "login", "set_login_cookies"]
