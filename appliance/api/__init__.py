"""The REST view: Falcon resources over the service, served by gunicorn."""
