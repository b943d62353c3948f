"""What the audience adapters share: a multipart body built byte for byte, and a secret-free platform error."""

from __future__ import annotations

import secrets

from throughline.spend.http import PlatformError

CONNECT_TIMEOUT = 10
READ_TIMEOUT = 120


class AudienceError(PlatformError):
    """A platform refused or failed an audience upload; the message names the step, never a token or a value."""


def multipart(fields: dict[str, str], file_name: str, file_body: bytes) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body: the text ``fields``, then the part ``file``; and its Content-Type."""
    boundary = "----throughline" + secrets.token_hex(12)
    chunks = []
    for name, value in fields.items():
        chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{file_name}"\r\n'
                  "Content-Type: application/octet-stream\r\n\r\n".encode() + file_body + b"\r\n")  # fmt: skip
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"
