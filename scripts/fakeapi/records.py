"""Recording bodies, deterministic in (id, seed): realistic records, sized ones, and edge cases."""

from __future__ import annotations

import functools
import hashlib
import json
import math
import random
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

import orjson

from fakeapi.config import TOGGLES, ServerConfig

_FIRST_NAMES: Final = (
    "Ana", "José", "Zoë", "Liam", "Priya", "Mateo", "Chen", "Olivia", "Kwame", "Sofía",
    "Noah", "Aisha", "Lukas", "Mei", "Omar", "Grace", "Tomás", "Ingrid", "Ravi", "Chloé",
)  # fmt: skip
_LAST_NAMES: Final = (
    "García", "Smith", "Nguyen", "Okafor", "Müller", "Patel", "Kowalski", "O'Brien",
    "Johansson", "Rossi", "Kim", "Dubois", "Haddad", "Silva", "Tanaka", "Brown",
)  # fmt: skip
_ORGS: Final = (
    "Acme Roofing", "Brightside Solar", "Cascade Windows & Doors", "Summit HVAC",
    "Evergreen Landscaping", "Keystone Siding", "Bluewater Pools", "Northstar Insulation",
)  # fmt: skip
_CITIES: Final = (
    ("Austin", "TX", "78701"), ("Denver", "CO", "80202"), ("Tampa", "FL", "33602"),
    ("Phoenix", "AZ", "85004"), ("Columbus", "OH", "43215"), ("Raleigh", "NC", "27601"),
)  # fmt: skip
_WORDS: Final = (
    "roof", "estimate", "warranty", "shingles", "financing", "install", "inspection",
    "gutters", "quote", "monthly", "payment", "solar", "panels", "energy", "bill", "savings",
    "windows", "siding", "schedule", "Tuesday", "morning", "crew", "permit", "square", "feet",
    "price", "discount", "today", "honestly", "okay", "yeah", "so", "um", "right", "the", "a",
    "we", "you", "your", "our", "is", "that", "this", "it", "and", "but", "for", "with", "on",
    "house", "attic", "leak", "storm", "damage", "insurance", "claim", "adjuster", "deductible",
    "contract", "signature", "deposit", "neighbor", "referral", "review", "company", "years",
    "lifetime", "labor", "materials", "color", "sample", "brochure", "follow", "up", "call",
    "think", "about", "spouse", "decide", "week", "budget", "cost", "expensive", "value",
    "café", "naïve", "señor", "façade", "don’t", "it’s", "we’re", "—", "…", "25-year", "$9,800",
)  # fmt: skip
_TRANSCRIPTION_STATUSES: Final = (
    "COMPLETE", "COMPLETE", "COMPLETE", "SECONDARY_TRANSCRIPTION_COMPLETE", "TRANSCRIBING",
    "UPLOADED", "ERROR",
)  # fmt: skip
_PROCESSING_STATUSES: Final = ("complete", "complete", "complete", "in-progress", "error")
_STAGES: Final = ("done", "done", "processing", "uploading")
_CONVERSATION_TYPES: Final = ("in-person", "phone", "virtual", "door-knock")
_LANGUAGES: Final = ("en", "en", "en", "es", "fr")
_OUTCOMES: Final = ("CLOSED", "NOT_CLOSED")
_CEFR: Final = ("A2", "B1", "B2", "C1", "C2")
_TAG_TYPES: Final = ("objection", "pricing", "close-attempt", "rapport", "next-steps")
_OSES: Final = (("ios", "17.4.1", "iPhone15,2"), ("android", "14", "Pixel 8"), ("web", "", "web"))

_EPOCH_2023: Final = 1_672_531_200
_TWO_YEARS_S: Final = 2 * 365 * 24 * 3600
_MIN_TRANSCRIPT: Final = 512
_MAX_TRANSCRIPT: Final = 16_384


def _iso(epoch_ms: int) -> str:
    """An ISO 8601 UTC timestamp with milliseconds, as the API writes dates."""
    seconds, millis = divmod(epoch_ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def _hex(rng: random.Random, digits: int = 20) -> str:
    """A random lowercase hex id, the shape of the API's document ids."""
    return f"{rng.getrandbits(digits * 4):0{digits}x}"


def _phrase(rng: random.Random, low: int, high: int) -> str:
    """A few words, for titles, tag texts and notes."""
    return " ".join(rng.choices(_WORDS, k=rng.randint(low, high)))


def unit_hash(*parts: object) -> float:
    """A uniform number in [0, 1) from the parts: stable across runs and processes.

    Used where the same inputs must give the same answer however requests interleave
    (which ids are large, which attempt gets a random fault).
    """
    text = "\x1f".join(str(part) for part in parts).encode("utf-8", "surrogatepass")
    digest = hashlib.blake2b(text, digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@functools.cache
def _transcript_corpus() -> tuple[str, tuple[int, ...]]:
    """About 64 KB of speaker turns, built once, and the offsets where turns start.

    Transcripts are slices of this (tiled), so a record costs a slice, not a word loop;
    that keeps the server at thousands of requests per second.
    """
    rng = random.Random(20240115)
    turns: list[str] = []
    starts: list[int] = []
    length = 0
    while length < 65_536:
        speaker = "Rep" if len(turns) % 2 == 0 else "Customer"
        turn = f"{speaker}: {_phrase(rng, 4, 40).capitalize()}.\n"
        starts.append(length)
        turns.append(turn)
        length += len(turn)
    return "".join(turns), tuple(starts)


@functools.lru_cache(maxsize=4)
def _tiled_corpus(copies: int) -> str:
    """The corpus repeated, so multi-megabyte transcripts are one slice too."""
    return _transcript_corpus()[0] * copies


def _transcript(rng: random.Random, length: int) -> str:
    """A transcript-like text of exactly length characters, starting at a speaker turn."""
    corpus, starts = _transcript_corpus()
    start = rng.choice(starts)
    copies = 1 + (start + length) // len(corpus) + 1
    return _tiled_corpus(copies)[start : start + length]


def is_large(recording_id: str, config: ServerConfig) -> bool:
    """Whether this id gets a large_bytes transcript (a stable fraction of ids)."""
    return unit_hash(config.seed, "large", recording_id) < config.large_fraction


def _transcript_length(rng: random.Random, large: bool, large_bytes: int) -> int:
    """Log-uniform in 0.5-16 KB, so most bodies land in 1-20 KB; or large_bytes."""
    if large:
        return large_bytes
    low, high = math.log(_MIN_TRANSCRIPT), math.log(_MAX_TRANSCRIPT)
    return int(math.exp(rng.uniform(low, high)))


def sized_body(recording_id: str, *, seed: int, body_bytes: int) -> bytes:
    """A compact record's body of exactly body_bytes bytes, or the smallest one (empty transcript).

    For measuring what record size does (compression ratios, per-record costs) with
    bodies the exporter accepts; its transcript is a slice of the same corpus.
    """
    rng = random.Random(f"{seed}\x1f{recording_id}\x1fsized")
    created_ms = (_EPOCH_2023 + rng.randrange(_TWO_YEARS_S)) * 1000 + rng.randrange(1000)
    record: dict[str, Any] = {
        "id": recording_id,
        "dateCreated": _iso(created_ms),
        "durationInMilliseconds": rng.randint(30_000, 5_400_000),
        "title": f"{_phrase(rng, 2, 5).title()} - {rng.choice(_CITIES)[0]}",
        "redactedTranscript": "",
    }
    envelope = {"data": record, "cursor": None, "pageSize": 1, "limit": 1}
    body = orjson.dumps(envelope)
    state = rng.getstate()
    length = body_bytes - len(body)
    # Newlines and non-ASCII letters take more than one byte each: shorten until it fits,
    # then pad with spaces to the exact size.
    while length > 0:
        rng.setstate(state)
        record["redactedTranscript"] = _transcript(rng, length)
        body = orjson.dumps(envelope)
        if len(body) <= body_bytes:
            record["redactedTranscript"] += " " * (body_bytes - len(body))
            return orjson.dumps(envelope)
        length -= len(body) - body_bytes
    return body


def make_record(
    recording_id: str,
    *,
    seed: int = 0,
    large: bool = False,
    large_bytes: int = 3_000_000,
    include: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """The recording served for recording_id: the same dict for the same arguments.

    include holds record field names from TOGGLES' values (e.g. "images"); the other fields
    do not depend on it, so a toggle only ever adds (or, for crmCustomer, fills) a field.
    """
    rng = random.Random(f"{seed}\x1f{recording_id}")
    created_ms = (_EPOCH_2023 + rng.randrange(_TWO_YEARS_S)) * 1000 + rng.randrange(1000)
    duration_ms = rng.randint(30_000, 5_400_000)
    org_id, team_id, user_id = _hex(rng), _hex(rng), _hex(rng)
    first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
    os_name, os_version, device = rng.choice(_OSES)
    chunks = max(1, duration_ms // 300_000)
    rep_ms = int(duration_ms * rng.uniform(0.3, 0.7))
    record: dict[str, Any] = {
        "id": recording_id,
        "dateCreated": _iso(created_ms),
        "deleted": False,
        "transcriptionStatus": rng.choice(_TRANSCRIPTION_STATUSES),
        "processingStatus": rng.choice(_PROCESSING_STATUSES),
        "processingStage": rng.choice(_STAGES),
        "processingErrors": rng.sample(("bookmarking-failed", "summary-failed"), rng.randint(0, 2)),
        "recordErrors": [] if rng.random() < 0.8 else ["paused-early"],
        "processingError": None,
        "rawAudioPath": f"orgs/{org_id}/recordings/{_hex(rng, 12)}/raw.m4a",
        "processedAudioPath": f"orgs/{org_id}/recordings/{_hex(rng, 12)}/processed.mp3",
        "lastProcessedAudio": _iso(created_ms + duration_ms + 60_000),
        "organizationId": org_id,
        "teamId": team_id,
        "userId": user_id,
        "locked": False,
        "terminatedUngraciously": rng.random() < 0.02,
        "originalDeviceId": _hex(rng, 16),
        "codeVersion": f"4.{rng.randint(0, 30)}.{rng.randint(0, 9)}",
        "organizationName": rng.choice(_ORGS),
        "repFirstName": first,
        "repLastName": last,
        "speakerMap": {"0": "rep", "1": "customer"},
        "redactedTranscript": _transcript(rng, _transcript_length(rng, large, large_bytes)),
        "confidence": round(rng.uniform(0.7, 0.99), 4),
        "error": None,
        "jumpToTags": [_jump_to_tag(rng, duration_ms) for _ in range(rng.randint(0, 5))],
        "jumpToTagsWordsOnly": [_phrase(rng, 1, 3) for _ in range(rng.randint(0, 4))],
        "lastUpdatedJumpToTags": _iso(created_ms + duration_ms + 120_000),
        "result": rng.choice(("closed", "not closed", "follow-up")),
        "title": f"{_phrase(rng, 2, 5).title()} - {rng.choice(_CITIES)[0]}",
        "notes": _phrase(rng, 0, 25),
        "durationInMilliseconds": duration_ms,
        "discoverable": rng.random() < 0.5,
        "isPrivate": rng.random() < 0.1,
        "detected_language": rng.choice(_LANGUAGES),
        "trendingScore": round(rng.uniform(0, 100), 3),
        "starCount": rng.randint(0, 12),
        "viewCount": rng.randint(0, 400),
        "uniqueViewCount": rng.randint(0, 60),
        "deletedDate": None,
        "conversationType": rng.choice(_CONVERSATION_TYPES),
        "debriefResponses": {},
        "debriefQuestions": [_debrief_question(rng, i) for i in range(rng.randint(0, 3))],
        "numberOfChunks": chunks,
        "numberOfProcessedChunks": chunks,
        "numberOfComments": rng.randint(0, 8),
        "unreadComments": {},
        "tags": {},
        "outcomeLabel": rng.choice(_OUTCOMES),
        "splitHistory": [],
        "lastSuccessfulSecondaryTranscription": {
            "_seconds": created_ms // 1000 + 900,
            "_nanoseconds": rng.randrange(1_000_000_000),
        },
        "latitude": round(rng.uniform(25.0, 48.0), 6),
        "longitude": round(rng.uniform(-122.0, -71.0), 6),
        "g": {"geohash": _hex(rng, 9), "geopoint": None},
        "conversationTime": duration_ms - rng.randint(0, 20_000),
        "repSpeakingTime": rep_ms,
        "customerSpeakingTime": duration_ms - rep_ms,
        "customerQuestionsCount": rng.randint(0, 40),
        "repQuestionsCount": rng.randint(0, 60),
        "exchangesCount": rng.randint(10, 300),
        "repWordCount": rep_ms // 400,
        "repWordsPerMinute": round(rng.uniform(110, 190), 2),
        "repSpeakerShare": round(rep_ms / duration_ms * 100, 2),
        "interactivityScore": round(rng.uniform(0, 10), 2),
        "repVocabularyLevel": rng.choice(_CEFR),
        "conversationSegmentDates": [
            {
                "dateStarted": _iso(created_ms),
                "dateEnded": _iso(created_ms + duration_ms),
                "conversationType": "in-person",
            }
        ],
        "extractedPrimaryContactPhoneNumber": None
        if rng.random() < 0.5
        else {
            "value": f"+1-555-{rng.randint(100, 999)}-{rng.randint(1000, 9999)}",
            "chunkId": _hex(rng, 12),
            "chunkNumber": rng.randint(0, chunks - 1),
            "startTimeInMilliseconds": rng.randint(0, duration_ms),
            "endTimeInMilliseconds": duration_ms,
            "confidence": round(rng.uniform(0.5, 1.0), 3),
        },
        "processedChunkNumbers": list(range(min(chunks, 40))),
        "audioDurationInMilliseconds": duration_ms,
        "isVideo": False,
        "source": {
            "sdkVersion": f"2.{rng.randint(0, 9)}.0",
            "bundleId": "com.example.recorder",
            "appVersion": f"4.{rng.randint(0, 30)}",
            "appName": "Recorder",
            "sdkType": "iOS" if os_name == "ios" else "Android",
        },
        "transcriptionLanguage": "English",
        "os": os_name,
        "osVersion": os_version,
        "deviceType": device,
        "summaryProcessingStatus": "not-started",
        "conversationQualityTag": "FULL_CONVERSATION",
        "betaFeatures": [],
        "allChunksUploaded": True,
        "recordingSettings": {"mobileChunkCreationMode": "minimized"},
        "crmCustomer": None,
        "seedRecordingId": None,
    }
    for field in sorted(include):
        builder = _TOGGLED_FIELDS.get(field)
        if builder is not None:
            record[field] = builder(random.Random(f"{seed}\x1f{recording_id}\x1f{field}"))
    return record


def _jump_to_tag(rng: random.Random, duration_ms: int) -> dict[str, Any]:
    """One bookmark inside a recording, with the nesting the reference shows."""
    start = rng.randrange(duration_ms)
    kind = rng.choice(_TAG_TYPES)
    return {
        "text": _phrase(rng, 2, 8),
        "timestampInMilliseconds": start,
        "endTimestampInMilliseconds": start + rng.randint(2_000, 60_000),
        "type": kind,
        "types": [kind],
        "preview": _phrase(rng, 6, 20),
        "bookmarkConfigId": _hex(rng),
        "advancedBookmarkConfirmed": rng.random() < 0.5,
        "classificationQuestions": [
            {"text": f"Did the rep {_phrase(rng, 2, 5)}?", "result": rng.random() < 0.5}
        ],
        "speakerTag": rng.choice(("0", "1")),
        "similarityScore": round(rng.random(), 4),
        "llmConfirmed": rng.random() < 0.7,
        "llmJustification": None,
    }


def _debrief_question(rng: random.Random, index: int) -> dict[str, Any]:
    """One post-call question, with its responseConfig and includeIf nesting."""
    return {
        "id": _hex(rng, 12),
        "prompt": f"{_phrase(rng, 3, 8).capitalize()}?",
        "responseType": rng.choice(("DATE_RESPONSE", "FREE_TEXT_RESPONSE", "SELECT_RESPONSE")),
        "responseConfig": {"includeTime": False, "required": rng.random() < 0.5},
        "sortValue": index,
        "includeIf": [],
        "onlyIncludeIfFlagged": False,
        "hideFromResults": False,
    }


def _image_group(rng: random.Random) -> dict[str, Any]:
    """A photo group, as in the reference's images and mediaOpportunities[].images."""
    path = f"https://img.example.com/{_hex(rng, 16)}/photo.jpg"
    return {
        "rawImages": [{"type": "web", "uri": path, "url": path}],
        "linkedImage": f"https://app.example.com/assets/Image/{rng.randint(10**9, 10**10)}",
        "timestamp": (_EPOCH_2023 + rng.randrange(_TWO_YEARS_S)) * 1000,
    }


def _address(rng: random.Random) -> dict[str, str]:
    """A US address for CRM objects."""
    city, state, zip_code = rng.choice(_CITIES)
    street = f"{rng.randint(1, 9999)} {rng.choice(('Main', 'Oak', 'Elm', 'Pine'))} St"
    return {"street": street, "city": city, "state": state, "zip": zip_code, "country": "USA"}


def _crm_opportunities(rng: random.Random) -> list[dict[str, Any]]:
    """includeCrmOpportunities=true."""
    return [
        {
            "opportunityExternalId": f"opp_{rng.randint(10000, 99999)}",
            "accountId": f"acc_{rng.randint(10000, 99999)}",
            "accountName": rng.choice(_LAST_NAMES) + " Residence",
            "disposition": rng.choice(("Closed Won", "Closed Lost", "Open")),
            "closedAt": _iso((_EPOCH_2023 + rng.randrange(_TWO_YEARS_S)) * 1000),
            "name": _phrase(rng, 2, 5).title(),
            "amount": rng.randint(2_000, 80_000),
            "integrationName": "Salesforce",
            "integrationPlatform": "salesforce",
            "addresses": [_address(rng)],
        }
        for _ in range(rng.randint(1, 2))
    ]


def _media_opportunities(rng: random.Random) -> list[dict[str, Any]]:
    """includeMediaOpportunities=true."""
    return [
        {
            "externalId": f"media_{rng.randint(10000, 99999)}",
            "integrationName": "HubSpot",
            "integrationPlatform": "hubspot",
            "name": _phrase(rng, 2, 4).title(),
            "addresses": [_address(rng)],
            "images": [_image_group(rng)],
        }
    ]


def _evaluation(rng: random.Random) -> dict[str, Any]:
    """includeEvaluation=true."""
    earned = rng.randint(0, 100)
    return {
        "hasScorecard": True,
        "evaluatedNodes": [
            {
                "id": "node_001",
                "name": "Conversation Quality",
                "indexNumber": 1,
                "parentId": "root",
                "nodeType": "SECTION",
                "metadata": {"metricId": "metric_001", "metricType": "CONVERSATION_TIME"},
                "pointsPossible": 100,
                "pointsEarned": earned,
                "color": "GREEN" if earned >= 80 else "YELLOW" if earned >= 50 else "RED",
                "metricValue": rng.randint(0, 3600),
                "unit": "seconds",
                "unitAbbreviated": "sec",
            }
        ],
        "sectionWeights": [{"scorecardNodeId": "node_001", "weight": 25}],
        "evaluationQualified": True,
        "pointsPossible": 100,
        "pointsEarned": earned,
    }


def _multimedia_events(rng: random.Random) -> list[dict[str, Any]]:
    """includeMultimediaEvents=true."""
    start = (_EPOCH_2023 + rng.randrange(_TWO_YEARS_S)) * 1000
    return [
        {"storageUrl": f"{_hex(rng, 8)}/{_hex(rng, 8)}", "mimeType": "image/jpeg",
         "timestampInMilliseconds": start + i * 600_000}
        for i in range(rng.randint(1, 3))
    ]  # fmt: skip


def _mobile_events(rng: random.Random) -> list[dict[str, Any]]:
    """includeMobileEvents=true."""
    start = (_EPOCH_2023 + rng.randrange(_TWO_YEARS_S)) * 1000
    return [
        {
            "id": f"event_{rng.randint(10000, 99999)}",
            "event": {"name": "recorderStateChange", "value": value, "trigger": "buttonPress"},
            "dateCreatedString": _iso(start + i * 5000)[:19] + "Z",
            "timestampInMilliseconds": start + i * 5000,
            "durationInMilliseconds": 5000,
        }
        for i, value in enumerate(("start", "pause", "resume", "stop"))
    ]


def _followups(rng: random.Random) -> list[dict[str, Any]]:
    """includeFollowups=true."""
    return [
        {
            "followupId": _hex(rng),
            "followupType": rng.choice(("REHASH", "CROSS_SELL")),
            "score": rng.randint(1, 5),
            "followupAction": _phrase(rng, 4, 10),
            "context": [{"header": "MAIN_OBJECTION", "value": _phrase(rng, 3, 9)}],
            "metadata": [{}],
            "starred": False,
            "status": rng.choice(("TO_DO", "IN_PROGRESS", "COMPLETE")),
            "history": [],
        }
    ]


def _crm_customer(rng: random.Random) -> dict[str, Any]:
    """includeCrmAccounts=true fills crmCustomer, which is null otherwise."""
    name = f"{rng.choice(_FIRST_NAMES)} {rng.choice(_LAST_NAMES)}"
    return {
        "id": f"acc_{rng.randint(10000, 99999)}",
        "name": name,
        "customerType": "ACCOUNT",
        "externalId": f"ext_{rng.randint(10000, 99999)}",
        "lastActivityAt": _iso((_EPOCH_2023 + rng.randrange(_TWO_YEARS_S)) * 1000),
        "matchingSource": rng.choice(("DIRECT", "FUZZY")),
        "emailAddress": f"customer{rng.randint(1, 9999)}@example.com",
        "phoneNumber": f"+1-555-{rng.randint(100, 999)}-{rng.randint(1000, 9999)}",
        "crmUrl": f"https://example.my.salesforce.com/lightning/r/Account/{_hex(rng, 18)}/view",
    }


_TOGGLED_FIELDS: Final[Mapping[str, Callable[[random.Random], Any]]] = {
    "images": lambda rng: [_image_group(rng) for _ in range(rng.randint(1, 3))],
    "crmOpportunities": _crm_opportunities,
    "mediaOpportunities": _media_opportunities,
    "evaluation": _evaluation,
    "multimediaEvents": _multimedia_events,
    "mobileEvents": _mobile_events,
    "followups": _followups,
    "crmCustomer": _crm_customer,
}


def toggled_fields(query: Mapping[str, str]) -> frozenset[str]:
    """The record fields switched on by includeX=true parameters in a query."""
    return frozenset(field for param, field in TOGGLES.items() if query.get(param, "").lower() == "true")


def _envelope_bytes(data_json: str) -> bytes:
    """Wrap already-encoded data in the API's envelope."""
    return f'{{"data":{data_json},"cursor":null,"pageSize":1,"limit":1}}'.encode()


def _nested(depth: int, leaf: Any) -> Any:
    """leaf wrapped in depth containers, alternating list and object."""
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 == 0 else {"k": value}
    return value


def _int_text(value: int) -> str:
    """Decimal text of any int, even past Python's 4300-digit str() limit."""
    if value < 0:
        return "-" + _int_text(-value)
    chunk = 10**1000
    parts: list[str] = []
    while value >= chunk:
        value, low = divmod(value, chunk)
        parts.append(f"{low:01000d}")
    parts.append(str(value))
    return "".join(reversed(parts))


#: Edge fields written with \\u escapes in the body (the rest are raw UTF-8).
_EDGE_ESCAPED_KEYS: Final = frozenset({"emojiEscaped", "accentEscaped", "lineSeparatorEscaped"})
#: Edge fields whose body text is fixed, to use an escape json.dumps never writes.
_EDGE_LITERALS: Final[Mapping[str, str]] = {"solidusEscaped": '"a\\/b"'}

_HUGE_INT: Final = 10**4999 + 1234567890  # 5000 digits: past Python's default str() limit
_BIG_STRING_BYTES: Final = 2_000_000


def edge_record(recording_id: str) -> dict[str, Any]:
    """The data served for an edge-* id: values an archive must keep exactly.

    json.loads(edge_body(id))["data"] equals this, including key order, -0.0's sign and
    1.0 staying a float. Parsing it needs sys.set_int_max_str_digits(0) (hugeInt has 5000
    digits), and orjson.loads silently turns integers past 64 bits into floats.
    """
    return {
        "id": recording_id,
        "u64Max": 2**64 - 1,
        "twoTo64": 2**64,
        "belowI64Min": -(2**63) - 1,
        "i64Min": -(2**63),
        "tenTo40": 10**40,
        "hugeInt": _HUGE_INT,
        "negativeZero": -0.0,
        "nearMaxFloat": 1e308,
        "maxFloat": 1.7976931348623157e308,
        "minSubnormal": 5e-324,
        "oneAndAHalf": 1.5,
        "oneAsFloat": 1.0,
        "pointOnePlusPointTwo": 0.30000000000000004,
        "smallExponent": 1e-7,
        "nul": "before\u0000after",
        "lineSeparator": "a\u2028b",
        "paragraphSeparator": "a\u2029b",
        "lineSeparatorEscaped": "escaped \u2028 too",
        "emojiRaw": "raw \U0001f600 UTF-8",
        "emojiEscaped": "escaped \U0001f600 as a surrogate pair",
        "accentEscaped": "caf\u00e9",
        "zwjSequence": "\U0001f469\u200d\U0001f469\u200d\U0001f467 \U0001f1fa\U0001f1f8",
        "controlChars": "\t\n\r\b\f\u001f\u007f",
        "quotesAndBackslashes": '"quoted" \\ back\\slash',
        "solidusEscaped": "a/b",
        "nested200": _nested(200, "bottom"),
        "bigString": _big_string(),
        "title": None,
        "notes": None,
        "speakerMap": {},
        "jumpToTags": [],
        "emptyString": "",
        "unicodeKeys": {
            "ключ": 1,
            "键": 2,
            "\U0001f511": 3,
            "": "empty key",
            "nul\u0000key": "NUL in a key",
            "\u2028": "line separator key",
        },
    }


@functools.cache
def _big_string() -> str:
    """A 2 MB string full of characters that need escaping, so it is slow to get wrong."""
    unit = 'line with "quotes", a \\ backslash, caf\u00e9 and a tab\t\n'
    return (unit * (_BIG_STRING_BYTES // len(unit) + 1))[:_BIG_STRING_BYTES]


def _edge_value_json(key: str, value: Any) -> str:
    """Encode one edge field, escaped, literal or raw UTF-8 as the field calls for."""
    if key in _EDGE_LITERALS:
        return _EDGE_LITERALS[key]
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 10_000:
        return _int_text(value)
    return json.dumps(value, ensure_ascii=key in _EDGE_ESCAPED_KEYS)


@functools.lru_cache(maxsize=16)
def edge_body(recording_id: str) -> bytes:
    """The exact body served for an edge-* id (cached: it holds a 2 MB string)."""
    record = edge_record(recording_id)
    members = (
        f"{json.dumps(key, ensure_ascii=False)}:{_edge_value_json(key, value)}"
        for key, value in record.items()
    )
    return _envelope_bytes("{" + ",".join(members) + "}")


def deep_record(recording_id: str) -> dict[str, Any]:
    """The data served for a deep-* id: nested 300 levels, past orjson's 255 for writing."""
    return {"id": recording_id, "deep": _nested(300, "bottom")}


def success_body(recording_id: str, config: ServerConfig, include: frozenset[str] = frozenset()) -> bytes:
    """The exact body of a normal 200 for recording_id, so tests can compare archives.

    edge-*, deep-* and pretty-* ids have their special bodies; include (record field names,
    see toggled_fields) only affects ordinary and pretty-* records.
    """
    if recording_id.startswith("edge-"):
        return edge_body(recording_id)
    if recording_id.startswith("deep-"):
        return _envelope_bytes(json.dumps(deep_record(recording_id), ensure_ascii=False))
    if config.record_bytes is not None and not recording_id.startswith("pretty-"):
        return sized_body(recording_id, seed=config.seed, body_bytes=config.record_bytes)
    record = make_record(
        recording_id,
        seed=config.seed,
        large=is_large(recording_id, config),
        large_bytes=config.large_bytes,
        include=include,
    )
    envelope = {"data": record, "cursor": None, "pageSize": 1, "limit": 1}
    if recording_id.startswith("pretty-"):
        return json.dumps(envelope, indent=2, ensure_ascii=False).encode()
    return orjson.dumps(envelope)
