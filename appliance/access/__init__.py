"""Who is calling and what they may do: the principal (principal.py), the one
policy table every route and every file is decided by (policy.py), and the
tokens that name a principal over REST (tokens.py)."""
from appliance.access.principal import (
    DEFAULT_PROJECT,
    SYSTEM,
    Principal,
    Role,
    acting_as,
    caller,
)

__all__ = ["DEFAULT_PROJECT", "SYSTEM", "Principal", "Role", "acting_as", "caller"]
