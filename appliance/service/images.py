"""Images: import (from the admin's folder or a trusted path), upload, list, delete."""

from __future__ import annotations

from pathlib import Path

from appliance.errors import Conflict
from appliance.image_store import ByteSource, ImageStore
from appliance.service.base import ServiceBase
from appliance.store import Row


class Images(ServiceBase):
    def list_images(self) -> list[Row]:
        return self.store.list_images()

    def get_image(self, name: str) -> Row:
        return self.store.get_image(name)

    def _image_store(self) -> ImageStore:
        return ImageStore(self.store, self.config, self.clock)

    def import_image(self, name: str, path: str) -> Row:
        """Copy a file from the admin's image import directory (POST /v1/images {"path"})."""
        return self._image_store().import_from_path(name, path)

    def import_image_file(self, name: str, path: str | Path) -> Row:
        """Copy a file the admin named outside the API (vmctl serve --demo-image, fixtures)."""
        return self._image_store().import_trusted(name, path)

    def upload_image(self, name: str, stream: ByteSource, length: int | None) -> Row:
        return self._image_store().upload(name, stream, length)

    def begin_image_file(self, name: str) -> tuple[Path, int]:
        """A private file for an image written piece by piece (the mount's `cp FILE images/`):
        its path and an fd on it (ImageStore.begin_file)."""
        return self._image_store().begin_file(name)

    def register_image_file(self, name: str, tmp: Path, source: str) -> Row:
        """The file from begin_image_file, complete: checked as an upload, then recorded."""
        return self._image_store().register_file(name, tmp, source)

    def delete_image(self, name: str) -> None:
        with self.store.transaction():
            image = self.store.get_image(name)
            users = self.store.vm_names_using_image(name)
            if users:
                raise Conflict(f"image is used by {', '.join(users[:5])}", "name")
            self.store.delete_image(name)
            self.store.add_event("image-deleted", f"image {name} deleted")
        Path(image["path"]).unlink(missing_ok=True)
