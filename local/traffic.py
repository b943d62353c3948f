"""Realistic web-form traffic for demos and tests: people arriving from a mix of channels, typing phones their own
way, sometimes coming back, double-clicking, or being bots."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import phonenumbers

from local.ad_sandboxes.base import campaign_ids

FIRST_NAMES = [
    "Иван",
    "Мария",
    "Алексей",
    "Ольга",
    "Дмитрий",
    "Анна",
    "Сергей",
    "Екатерина",
    "Павел",
    "Наталья",
    "Андрей",
    "Татьяна",
    "Михаил",
]
LAST_NAMES = [
    "Иванов",
    "Смирнов",
    "Кузнецов",
    "Попов",
    "Васильев",
    "Петров",
    "Соколов",
    "Михайлов",
    "Новиков",
    "Фёдоров",
    "Морозов",
    "Волков",
]
SITE = "https://shop.example.ru"
BOT_IP = "203.0.113.66"  # posts of no person (honeypot bots, typos) come from one address (RFC 5737)

# How advertisers tag their ads, as the demo's ad accounts (local.ad_sandboxes.start_all) are tagged: some campaigns
# by a name in utm_campaign, others by the platform's URL macro, which puts the campaign's id there (Yandex Direct
# `{campaign_id}`, Google Ads `{campaignid}`, VK Ads `{{campaign_id}}`) or in utm_content. The ids are the sandboxes'.
_YANDEX = campaign_ids("demo-client", 3)
_YANDEX_KZ = campaign_ids("demo-client-kz", 1)
_GOOGLE = campaign_ids("1234567890", 3, start=2000)
_VK = campaign_ids("7700123", 3, start=3000)
YANDEX_CAMPAIGNS = ("zima_sale", "brand", _YANDEX[2], {"utm_campaign": "kz_promo", "utm_content": _YANDEX_KZ[0]})
GOOGLE_CAMPAIGNS = ("generic", _GOOGLE[1], _GOOGLE[2])
VK_CAMPAIGNS = ("lookalike", "retarget", _VK[2])

# (weight, name, what the visit looks like): the channel mix of a small Russian B2C site. A campaign is the
# utm_campaign value, or the tags an ad carries besides source and medium.
CHANNEL_MIX: tuple[tuple[int, str, dict[str, Any]], ...] = (
    (24, "yandex_direct", {"utm_source": "yandex", "utm_medium": "cpc", "campaigns": YANDEX_CAMPAIGNS}),
    (12, "google_ads", {"utm_source": "google", "utm_medium": "cpc", "campaigns": GOOGLE_CAMPAIGNS, "click": "gclid"}),
    (14, "yandex_organic", {"referrer": "https://yandex.ru/", "click": "ysclid"}),
    (6, "google_organic", {"referrer": "https://www.google.com/"}),
    (10, "vk_ads", {"utm_source": "vk", "utm_medium": "cpc", "campaigns": VK_CAMPAIGNS}),
    (5, "telegram", {"referrer": "https://t.me/"}),
    (7, "newsletter", {"utm_source": "newsletter", "utm_medium": "email", "campaigns": ("november_digest",)}),
    (10, "direct", {}),
    (4, "partner", {"referrer": "https://partner-blog.ru/obzor"}),
    (3, "dzen", {"referrer": "https://dzen.ru/a/xyz"}),
    (3, "offline_flyer", {"utm_source": "flyer", "utm_medium": "offline", "campaigns": ("metro_november",)}),
)  # fmt: skip


def campaign_tags(campaign: str | dict[str, str]) -> dict[str, str]:
    """A CHANNEL_MIX campaign as the tags its ads carry besides source and medium."""
    return dict(campaign) if isinstance(campaign, dict) else {"utm_campaign": campaign}


def utm_campaigns(tags: dict[str, Any]) -> set[str]:
    """The utm_campaign values a channel's posts may carry."""
    return {campaign_tags(campaign)["utm_campaign"] for campaign in tags.get("campaigns", ())}


@dataclass
class Person:
    name: str
    phone_digits: str  # ten digits after +7
    email: str | None
    channel: str
    tags: dict[str, Any] = field(default_factory=dict)

    @property
    def e164(self) -> str:
        return "+7" + self.phone_digits

    @property
    def ip(self) -> str:
        """The visitor's address: distinct people post from distinct addresses (198.18.0.0/15, the range RFC 2544
        sets aside for tests), so the per-IP flood limit sees a crowd, not one client."""
        return visitor_ip(self.phone_digits)


def visitor_ip(seed: str) -> str:
    digest = hashlib.sha256(seed.encode()).digest()
    return f"198.{18 + digest[0] % 2}.{digest[1]}.{digest[2]}"


@dataclass
class Post:
    """One HTTP post of a form, and what we expect of it."""

    form_id: str
    body: dict[str, Any]
    person: Person | None
    kind: str  # new | repeat | double | spam | invalid
    as_json: bool = True
    ip: str | None = None  # the address it comes from; else the person's (or the bots' one)


def people(count: int, rng: random.Random) -> list[Person]:
    weights = [weight for weight, _, _ in CHANNEL_MIX]
    used: set[str] = set()
    crowd = []
    while len(crowd) < count:
        digits = "9" + "".join(rng.choice("0123456789") for _ in range(9))
        if digits in used or not phonenumbers.is_valid_number(phonenumbers.parse("+7" + digits)):
            continue  # a few 9xx ranges are not allocated
        used.add(digits)
        _, channel, tags = rng.choices(CHANNEL_MIX, weights=weights)[0]
        name = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
        email = f"client{len(crowd)}@example.ru" if rng.random() < 0.5 else None
        crowd.append(Person(name, digits, email, channel, tags))
    return crowd


def form_post(person: Person, rng: random.Random, *, form_id: str = "contact", now: datetime | None = None) -> Post:
    """A form post as a site's capture snippet sends it: contacts, last-touch tags, first-touch memory."""
    now = now or datetime.now(UTC)
    body: dict[str, Any] = {"name": person.name, "phone": _typed_phone(person.phone_digits, rng)}
    if person.email:
        body["email"] = person.email.upper() if rng.random() < 0.2 else person.email
    if rng.random() < 0.4:
        body["comment"] = rng.choice(("Перезвоните, пожалуйста", "Интересует доставка", "Нужна консультация"))
    tags = person.tags
    landing = f"{SITE}/catalog"
    if "utm_source" in tags:
        ad = campaign_tags(rng.choice(tags["campaigns"]))
        tagged = {"utm_source": tags["utm_source"], "utm_medium": tags["utm_medium"], **ad}
        query = "&".join(f"{name}={value}" for name, value in tagged.items())
        if tags.get("click") == "gclid":
            query += f"&gclid=Cj0K{rng.randrange(10**8)}"
        # Yandex Direct and VK Ads add their click ids to every ad link (derived from the person, not drawn from
        # ``rng``, so the rest of the traffic stays as it was for a seed).
        if tags["utm_source"] == "yandex":
            query += f"&yclid={_person_number(person, 'yclid', 19)}"
        elif tags["utm_source"] == "vk":
            query += f"&rb_clickid={_person_number(person, 'rb_clickid', 20)}"
        landing = f"{SITE}/landing?{query}"
        if rng.random() < 0.5:  # half the snippets send tags as fields, half leave them in the landing URL
            body |= tagged
    elif tags.get("click") == "ysclid":
        landing = f"{SITE}/?ysclid=l{rng.randrange(10**8)}"
    body["landing_url"] = landing
    if "referrer" in tags:
        body["referrer"] = tags["referrer"]
    if int(_person_number(person, "metrica", 2)) % 5:  # four in five visitors' browsers ran the Metrica tag
        body["ym_client_id"] = "17" + _person_number(person, "ym_client_id", 17)
    if rng.random() < 0.3:  # the snippet remembered an earlier organic visit
        first_seen = now - timedelta(days=rng.randint(1, 20))
        body |= {"first_referrer": "https://yandex.ru/", "first_seen_at": first_seen.isoformat()}
    return Post(form_id, body, person, "new", as_json=rng.random() < 0.7)


def _person_number(person: Person, purpose: str, digits: int) -> str:
    """A stable number of ``digits`` digits for one person and purpose (a click id, a Metrica ClientID)."""
    value = int.from_bytes(hashlib.sha256(f"{purpose}|{person.phone_digits}".encode()).digest()[:12], "big")
    return str(value % 10**digits).zfill(digits)


@dataclass
class Burst:
    people: list[Person]
    first_wave: list[Post]  # everyone's first request, double clicks, bots and typos, shuffled
    second_wave: list[Post]  # repeat requests, sent after the first wave has been answered

    @property
    def posts(self) -> list[Post]:
        return self.first_wave + self.second_wave


def burst(
    person_count: int,
    seed: int = 7,
    *,
    repeats: float = 0.12,
    doubles: float = 0.03,
    spam: int = 3,
    invalid: int = 3,
) -> Burst:
    """Posts for ``person_count`` people: each posts once; some again later (repeat requests), some twice at once
    (double clicks); plus bot posts with the honeypot filled and posts with a broken phone."""
    rng = random.Random(seed)
    crowd = people(person_count, rng)
    posts = [form_post(person, rng) for person in crowd]
    for person in rng.sample(crowd, int(person_count * doubles)):
        original = next(post for post in posts if post.person is person)
        posts.append(Post(original.form_id, dict(original.body), person, "double", original.as_json))
    tail = []
    for person in rng.sample(crowd, int(person_count * repeats)):
        post = form_post(person, rng, form_id="callback")
        post.kind = "repeat"
        post.body["comment"] = "Повторный вопрос: " + rng.choice(("цена", "сроки", "гарантия"))
        tail.append(post)
    for index in range(spam):
        bot = {"name": "bot", "phone": "+79990000000", "_gotcha": f"http://spam{index}.biz"}
        posts.append(Post("contact", bot, None, "spam"))
    for _ in range(invalid):
        posts.append(Post("contact", {"name": "Опечатка", "phone": "12-34"}, None, "invalid"))
    rng.shuffle(posts)
    return Burst(crowd, posts, tail)


def _typed_phone(digits: str, rng: random.Random) -> str:
    """How people type the same number: 8 (916) 123-45-67, +7 916 123 45 67, 9161234567…"""
    d = digits
    return rng.choice(
        (
            f"8 ({d[:3]}) {d[3:6]}-{d[6:8]}-{d[8:]}",
            f"+7 {d[:3]} {d[3:6]} {d[6:8]} {d[8:]}",
            f"+7{d}",
            f"8{d}",
            f"{d}",
            f"+7 ({d[:3]}) {d[3:6]}-{d[6:8]}-{d[8:]}",
        )
    )


def send(base_url: str, posts: list[Post], *, concurrency: int = 6, progress=None) -> list[tuple[Post, int, Any]]:
    """Post every form over HTTP, ``concurrency`` at a time, as browsers would; returns (post, status, body)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import requests

    local = threading.local()
    done = [0]
    lock = threading.Lock()

    def one(post: Post) -> tuple[Post, int, Any]:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        url = f"{base_url}/v1/forms/{post.form_id}/submissions"
        # The local stack takes X-Forwarded-For as API Gateway's sourceIp (in AWS it is the connection's address).
        headers = {"Origin": SITE, "X-Forwarded-For": post.ip or (post.person.ip if post.person else BOT_IP)}
        if post.as_json:
            response = session.post(url, json=post.body, headers=headers, timeout=30)
        else:
            response = session.post(url, data=post.body, headers=headers, timeout=30)
        with lock:
            done[0] += 1
            if progress and done[0] % 50 == 0:
                progress(f"  sent {done[0]}/{len(posts)} form posts")
        try:
            body = response.json()
        except ValueError:
            body = response.text
        return post, response.status_code, body

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(one, posts))
