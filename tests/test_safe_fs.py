"""archive.safe_fs: the one way the archive opens and writes its files."""

from __future__ import annotations

import os


def test_write_all_survives_partial_writes() -> None:
    """write_all delivers every byte of many buffers in order even when the kernel takes them piecemeal."""
    import threading

    from exporter.archive.safe_fs import write_all as _write_all

    chunks = [bytes([i % 251]) * (1000 + i) for i in range(3000)]
    read_fd, write_fd = os.pipe()  # a pipe accepts at most its capacity per call
    received = bytearray()

    def drain() -> None:
        while data := os.read(read_fd, 1 << 16):
            received.extend(data)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        _write_all(write_fd, chunks)
    finally:
        os.close(write_fd)
        reader.join()
        os.close(read_fd)
    assert bytes(received) == b"".join(chunks)
