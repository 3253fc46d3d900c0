"""Managed saves of the fake hypervisor (fake.py's FakeGuest), as libvirt
behaves (libvirt_saves.py): a running or paused domain is saved and shut off;
its next start restores it; a plain undefine is refused while it holds a save."""
from __future__ import annotations

from typing import TYPE_CHECKING

from appliance.virt.driver import DriverError

if TYPE_CHECKING:
    from appliance.virt.fake import FakeDomain, FakeDriver


class FakeSaveMethods:
    driver: FakeDriver
    uuid: str

    def _dom(self) -> FakeDomain:
        raise NotImplementedError

    def managed_save(self) -> None:
        with self.driver.cloud.lock:
            dom = self._dom()
            self.driver.fake_host().calls.append(f"managed-save {self.uuid}")
            if dom.state not in ("running", "paused"):
                raise DriverError(f"managed-save: domain is {dom.state}",
                                  "domain is not running")
            dom.state, dom.reason, dom.saved = "stopped", "saved", True

    def has_managed_save(self) -> bool:
        return self._dom().saved

    def discard_managed_save(self) -> None:
        with self.driver.cloud.lock:
            dom = self._dom()
            self.driver.fake_host().calls.append(f"discard-save {self.uuid}")
            dom.saved = False
