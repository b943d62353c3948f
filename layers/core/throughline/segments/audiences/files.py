"""The exact bytes each platform receives for a list of members: normalized, de-duplicated, hashed.

- Yandex Audiences, a CRM segment (yandex.com/support/audience/file; /dev/audience/doc/intro/data-requirements): a
  UTF-8 CSV whose first line names the fields (``phone,email``), one line per client record, each value hashed on its
  own with SHA-256 (MD5 uploads are refused since January 2025), lower-case hex; a record may leave one field empty.
  A customer with two phones takes two records (phone i beside e-mail i), so Yandex can glue a phone to an e-mail.
- VK Ads remarketing user lists (target.my.com/help/advertisers/sourceuserlists, the engine VK Ads shares): one
  identifier type per list, a text file with one item per line (``\\n``), UTF-8; phones and e-mails may be uploaded
  hashed with MD5 (lower-case hex). So an audience is two lists: its phones and its e-mails.

An identifier already sent for an earlier member is not repeated; a member without any usable identifier is skipped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from throughline.segments.audiences.members import Member
from throughline.segments.audiences.normalize import email_address, phone_digits


@dataclass(frozen=True)
class Prepared:
    """Members' normalized identifiers, in order, each identifier once."""

    rows: list[tuple[list[str], list[str]]]  # per kept member: (phones, emails)
    skipped: int

    @property
    def members(self) -> int:
        return len(self.rows)

    @property
    def phones(self) -> list[str]:
        return [phone for phones, _ in self.rows for phone in phones]

    @property
    def emails(self) -> list[str]:
        return [email for _, emails in self.rows for email in emails]


def prepare(members: Iterable[Member], region: str = "RU") -> Prepared:
    """Each member's phones (national numbers read in ``region``) and e-mails, normalized, each identifier once."""
    seen: set[str] = set()
    rows: list[tuple[list[str], list[str]]] = []
    skipped = 0
    for member in members:
        phones = _fresh((phone_digits(value, region) for value in member.phones), seen)
        emails = _fresh((email_address(value) for value in member.emails), seen)
        if phones or emails:
            rows.append((phones, emails))
        else:
            skipped += 1
    return Prepared(rows, skipped)


def _fresh(values: Iterable[str | None], seen: set[str]) -> list[str]:
    kept = []
    for value in values:
        if value and value not in seen:
            seen.add(value)
            kept.append(value)
    return kept


def sha256(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def md5(value: str) -> str:
    return hashlib.md5(value.encode("utf-8"), usedforsecurity=False).hexdigest()


def yandex_csv(prepared: Prepared) -> tuple[bytes, int]:
    """The CRM file for Yandex Audiences and the number of its records (lines after the header)."""
    lines = ["phone,email"]
    for phones, emails in prepared.rows:
        for index in range(max(len(phones), len(emails))):
            phone = sha256(phones[index]) if index < len(phones) else ""
            email = sha256(emails[index]) if index < len(emails) else ""
            lines.append(f"{phone},{email}")
    return ("\n".join(lines) + "\n").encode("utf-8"), len(lines) - 1


def vk_list(values: list[str]) -> bytes:
    """One VK user-list file: MD5 of each value, one per line."""
    return "".join(md5(value) + "\n" for value in values).encode("utf-8")
