"""exporter: an async bulk exporter and archiver for the call-recordings REST API."""

__version__ = "0.1.0"
