"""What an ad-platform adapter takes and gives back (one shape for Yandex Audiences, VK Ads and Google)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Member:
    """One customer of an exported segment: the contact's phones and e-mails as the portal holds them.

    The values are raw (as typed in Bitrix24); each adapter normalizes and hashes them as its platform documents.
    They are read from the portal at export time and never stored by Throughline.
    """

    contact_id: int
    phones: tuple[str, ...] = field(repr=False)  # never in a log line, a traceback's repr or an error message
    emails: tuple[str, ...] = field(repr=False)

    def __repr__(self) -> str:
        return f"Member(contact_id={self.contact_id}, phones={len(self.phones)}, emails={len(self.emails)})"


@dataclass(frozen=True)
class AudienceSync:
    """The outcome of sending one audience to one platform."""

    platform: str  # "yandex" | "vk" | "google"
    audience: str  # the configured audience name
    list_id: str  # the platform's id of the segment / list / user list
    members: int  # customers sent (with at least one usable identifier)
    identifiers: int  # hashed identifiers sent
    calls: int  # HTTP calls made
    removed: int = 0  # identifiers removed (platforms that take removals)
    skipped: int = 0  # customers without any usable phone or e-mail
    pending: int = 0  # identifiers whose joining or leaving waits for a later night (VK: diffs of at least 25)
