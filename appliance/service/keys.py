"""SSH keys (issue 15, Nova's keypairs): each user's OpenSSH public keys by name,
and the VMs' copies of those their `cloud_init.keys` name.

Whose: a key is its user's; everyone with a token (viewers too: a key changes no
VM) lists, adds and deletes their own (OWN_TOKENS in the policy table); an admin
lists anyone's with `?user=`. Keys are not a project's: a user in two projects
uses the same keys in both.

A VM's keys: at create (and at a change of `cloud_init.keys`) the names are
looked up among the caller's keys and the texts copied into the VM's record
(vms.public_keys), as Nova copies a keypair into the instance: deleting or
replacing the key later changes no VM, and another user's change of the VM
keeps them. The seed (NoCloud `public-keys`, ConfigDrive `public_keys`) is
written from that copy at every boot; cloud-init adds them to the default user
once per instance (a rebuild: a new instance id).
"""

from __future__ import annotations

from typing import Any

from appliance.access import caller
from appliance.errors import Conflict, Invalid, NotFound
from appliance.model import sshkeys
from appliance.model.values import validate_name
from appliance.service.base import ServiceBase
from appliance.store import Row

MAX_KEYS_PER_USER = 50
KEY_FIELDS = ("name", "public_key")


def key_view(row: Row) -> dict[str, Any]:
    return {"name": row["name"], "user": row["user"], "type": row["type"], "bits": row["bits"],
            "fingerprint": row["fingerprint"], "public_key": row["key"],
            "created": row["created"]}


class Keys(ServiceBase):
    def list_keys(self, user: str | None = None) -> list[dict[str, Any]]:
        """The caller's keys; an admin's: `user`'s, or with user "*" everyone's."""
        return [key_view(r) for r in self.store.list_keys(self._key_owner(user, listing=True))]

    def get_key(self, name: str, user: str | None = None) -> dict[str, Any]:
        return key_view(self._key_row(self._key_owner(user), name))

    def create_key(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise Invalid("the body must be a JSON object", None)
        unknown = sorted(set(body) - set(KEY_FIELDS))
        if unknown:
            raise Invalid(f"unknown field; known fields are {', '.join(KEY_FIELDS)}", unknown[0])
        name = validate_name(body.get("name"), "name")
        parsed = sshkeys.parse(body.get("public_key"))
        owner = caller().user
        with self.store.transaction():
            if self.store.find_key(owner, name) is not None:
                raise Conflict(f"you have a key named {name!r}", "name")
            if self.store.count_keys(owner) >= MAX_KEYS_PER_USER:
                raise Conflict(f"at most {MAX_KEYS_PER_USER} keys per user: delete one first",
                               "name")
            row = {"id": str(self.uuidgen()), "user": owner, "name": name,
                   "key": parsed["key"], "type": parsed["type"], "bits": parsed["bits"],
                   "fingerprint": parsed["fingerprint"], "created": self.clock()}
            self.store.insert_key(row)
        return key_view(row)

    def delete_key(self, name: str, user: str | None = None) -> None:
        with self.store.transaction():
            row = self._key_row(self._key_owner(user), name)
            self.store.delete_key(row["id"])

    def vm_public_keys(self, spec: dict[str, Any]) -> dict[str, str]:
        """The caller's keys the spec's cloud_init.keys names, name -> line; Invalid
        naming `cloud_init.keys[i]` for one the caller lacks."""
        names = (spec.get("cloud_init") or {}).get("keys") or []
        if not names:
            return {}
        me = caller().user
        found = {}
        for index, name in enumerate(names):
            row = self.store.find_key(me, name)
            if row is None:
                raise Invalid(f"you have no SSH key named {name!r} (vmctl key list; "
                              "vmctl key add NAME FILE)", f"cloud_init.keys[{index}]")
            found[name] = row["key"]
        return found

    def _key_owner(self, user: str | None, listing: bool = False) -> str | None:
        me = caller()
        if user is None or user == me.user:
            return me.user
        if not me.is_admin:
            raise NotFound(f"no user named {user!r}", "user")  # others' keys are not shown
        if listing and user == "*":
            return None
        validate_name(user, "user")
        if not self.store.user_exists(user):
            raise NotFound(f"no user named {user!r}", "user")
        return user

    def _key_row(self, owner: str | None, name: str) -> Row:
        row = self.store.find_key(owner, name) if owner and isinstance(name, str) else None
        if row is None:
            raise NotFound(f"no SSH key named {name!r}", "name")
        return row
