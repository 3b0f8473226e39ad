"""Language codes of the output's audio tracks.

The worker's languages are ISO 639-1 codes (`en`, `es`: what the STS protocol's `stream:init`
carries). Containers tag an audio stream with ISO 639-2 (three letters): MPEG-TS in its
ISO_639_language_descriptor, Matroska in `Language`, MP4 in the track's `mdhd` (libav converts
the bibliographic form to the terminological one MP4 wants). `iso639_2` maps one to the other;
the table holds the bibliographic (B) codes, which MPEG-TS (DVB) and Matroska use.
"""

from __future__ import annotations

import re

#: Code of an undetermined language (ISO 639-2).
UNDETERMINED = "und"

#: ISO 639-1 → ISO 639-2/B for the languages a broadcast dub is likely to carry.
ISO639_1_TO_2B: dict[str, str] = {
    "ar": "ara", "bg": "bul", "bn": "ben", "ca": "cat", "cs": "cze", "cy": "wel", "da": "dan",
    "de": "ger", "el": "gre", "en": "eng", "eo": "epo", "es": "spa", "et": "est", "eu": "baq",
    "fa": "per", "fi": "fin", "fr": "fre", "ga": "gle", "gl": "glg", "he": "heb", "hi": "hin",
    "hr": "hrv", "hu": "hun", "id": "ind", "is": "ice", "it": "ita", "ja": "jpn", "ko": "kor",
    "lt": "lit", "lv": "lav", "ms": "may", "mt": "mlt", "nb": "nob", "nl": "dut", "nn": "nno",
    "no": "nor", "oc": "oci", "pl": "pol", "pt": "por", "ro": "rum", "ru": "rus", "sk": "slo",
    "sl": "slv", "sq": "alb", "sr": "srp", "sv": "swe", "sw": "swa", "ta": "tam", "th": "tha",
    "tr": "tur", "uk": "ukr", "ur": "urd", "vi": "vie", "zh": "chi",
}

_ALPHA3 = re.compile(r"[a-z]{3}")


def iso639_2(language: str | None) -> str:
    """The ISO 639-2 code of `language`: an ISO 639-1 code (`es`, also `es-MX` / `es_MX`: the
    primary subtag counts) is mapped by the table, a three-letter code is kept, anything else
    (unset, unknown) is `und`."""
    if not language:
        return UNDETERMINED
    primary = re.split(r"[-_]", language.strip().lower(), maxsplit=1)[0]
    if primary in ISO639_1_TO_2B:
        return ISO639_1_TO_2B[primary]
    return primary if _ALPHA3.fullmatch(primary) else UNDETERMINED
