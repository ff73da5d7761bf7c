"""Domain generators for published DGA families, written here from their public descriptions; seeded, deterministic.

They reproduce what a character-statistics detector sees of each family (alphabet, label lengths, suffixes),
not the malware's exact daily lists: where a description gives the arithmetic (Cryptolocker's shift
registers, Ramnit's Park-Miller generator) it is followed; where it gives only the shape (Conficker.C,
Necurs) a seeded generator of our own fills in the bytes. Sources, public analyses:
- Conficker.C: SRI International, "An Analysis of Conficker C" (2009): 50,000 names a day, 4-9 random
  lowercase letters, one of 110 TLDs, seeded by the UTC date.
- Cryptolocker: J. Bader, "The DGA of Cryptolocker" (2014) and vendor write-ups: three 32-bit xor-shift
  registers seeded by day, month, year; 12-15 letters from a-y (value % 25); .com .net .biz .ru .org
  .co.uk .info.
- Ramnit: J. Bader, "The DGA of Ramnit" (2014): Park-Miller minimal standard generator (16807, 127773,
  2836); length 8-19, letters a-y; .com; next seed from the product of two generator states.
- Necurs: J. Bader / Talos write-ups (2015): a 64-bit mixing of date, sequence number and seed; 7-21
  letters; 43 TLDs.
- Suppobox (dictionary DGA, a known limit of character statistics): Palo Alto Unit 42 / Bader (2015):
  two English words from fixed lists chosen from the time divided by 512 s; .net.
"""

from __future__ import annotations

import datetime
import random

MASK32 = 0xFFFFFFFF
MASK64 = 0xFFFFFFFFFFFFFFFF

# A subset of Conficker.C's published TLD list (the generator picks uniformly among them).
CONFICKER_TLDS = (
    "com",
    "net",
    "org",
    "info",
    "biz",
    "ws",
    "cn",
    "ru",
    "de",
    "cc",
    "in",
    "be",
    "ch",
    "at",
    "cz",
    "dk",
    "es",
    "eu",
    "fr",
    "gr",
    "hu",
    "ie",
    "it",
    "lu",
    "me",
    "mx",
    "nl",
    "no",
    "pl",
    "pt",
    "ro",
    "se",
    "sk",
    "co.uk",
    "com.br",
    "com.cn",
    "com.tw",
    "co.kr",
    "co.nz",
    "com.au",
    "com.mx",
    "co.za",
    "ag",
    "am",
    "as",
    "bz",
    "cl",
    "fm",
    "gs",
    "hn",
    "ht",
    "ki",
    "la",
    "lc",
    "lv",
    "md",
    "ms",
    "mn",
    "nf",
    "sc",
    "tc",
    "tl",
    "vc",
    "vn",
)
CRYPTOLOCKER_TLDS = ("com", "net", "biz", "ru", "org", "co.uk", "info")
NECURS_TLDS = (
    "tj",
    "in",
    "jp",
    "tw",
    "ac",
    "cm",
    "la",
    "mn",
    "so",
    "sh",
    "sc",
    "nu",
    "nf",
    "mu",
    "ms",
    "mx",
    "ki",
    "im",
    "cx",
    "cc",
    "tv",
    "bz",
    "me",
    "eu",
    "de",
    "ru",
    "co",
    "su",
    "pw",
    "kz",
    "sx",
    "us",
    "ug",
    "ir",
    "to",
    "ga",
    "com",
    "net",
    "org",
    "biz",
    "xxx",
    "pro",
    "bit",
)
SUPPOBOX_FIRST = (
    "above",
    "action",
    "advance",
    "afraid",
    "against",
    "airplane",
    "almost",
    "alone",
    "already",
    "although",
    "always",
    "amount",
    "anger",
    "angry",
    "animal",
    "another",
    "answer",
    "appear",
    "apple",
    "around",
    "arrive",
    "article",
    "attempt",
    "banker",
    "basket",
    "battle",
    "beauty",
    "became",
    "because",
    "become",
    "before",
    "begin",
    "behind",
    "being",
    "believe",
    "belong",
    "beside",
    "better",
    "between",
    "beyond",
    "bicycle",
    "board",
    "borrow",
    "bottle",
    "bottom",
    "branch",
    "bread",
    "bridge",
    "bright",
    "bring",
)
SUPPOBOX_SECOND = (
    "broad",
    "broken",
    "brother",
    "brought",
    "brown",
    "building",
    "built",
    "business",
    "butter",
    "captain",
    "carry",
    "catch",
    "caught",
    "century",
    "chair",
    "chance",
    "character",
    "charge",
    "chief",
    "childhood",
    "children",
    "choose",
    "cigarette",
    "circle",
    "class",
    "clean",
    "clear",
    "close",
    "clothes",
    "college",
    "company",
    "complete",
    "condition",
    "consider",
    "contain",
    "continue",
    "control",
    "corner",
    "country",
    "course",
    "cover",
    "crowd",
    "daughter",
    "decide",
    "degree",
    "delight",
    "demand",
    "desire",
    "destroy",
)


def conficker_c(day: datetime.date, count: int) -> list[str]:
    rng = random.Random(f"conficker-c/{day.isoformat()}")
    out = []
    for _ in range(count):
        label = "".join(chr(97 + rng.randrange(26)) for _ in range(rng.randint(4, 9)))
        out.append(f"{label}.{rng.choice(CONFICKER_TLDS)}")
    return out


def cryptolocker(day: datetime.date, count: int) -> list[str]:
    out = []
    for index in range(count):
        # each name of the day seeds the day register differently (the family draws several names a day)
        d = (day.day * 0x01000193 + index * 0x9E3779B1) & MASK32
        m, y = day.month, day.year
        d = (((d ^ (d << 13)) & MASK32) >> 19) ^ (((d & 0xFFFFFFFE) << 12) & MASK32)
        m = (((m ^ (m << 2)) & MASK32) >> 25) ^ (((m & 0xFFFFFFF8) << 4) & MASK32)
        y = (((y ^ (y << 3)) & MASK32) >> 11) ^ (((y & 0xFFFFFFF0) << 17) & MASK32)
        length = (d ^ m ^ y) % 4 + 12
        label = []
        for _ in range(length):
            d = (((d ^ (d << 13)) & MASK32) >> 19) ^ (((d & 0xFFFFFFFE) << 12) & MASK32)
            m = (((m ^ (m << 2)) & MASK32) >> 25) ^ (((m & 0xFFFFFFF8) << 4) & MASK32)
            y = (((y ^ (y << 3)) & MASK32) >> 11) ^ (((y & 0xFFFFFFF0) << 17) & MASK32)
            label.append(chr((d ^ m ^ y) % 25 + 97))
        out.append(f"{''.join(label)}.{CRYPTOLOCKER_TLDS[index % len(CRYPTOLOCKER_TLDS)]}")
    return out


class _ParkMiller:
    def __init__(self, seed: int) -> None:
        self.seed = seed & MASK32

    def next_mod(self, modulus: int) -> int:
        ix = self.seed
        ix = (16807 * (ix % 127773) - 2836 * (ix // 127773)) & MASK32
        self.seed = ix
        return ix % modulus


def ramnit(seed: int, count: int) -> list[str]:
    gen = _ParkMiller(seed)
    out = []
    for _ in range(count):
        seed_a = gen.seed
        length = gen.next_mod(12) + 8
        seed_b = gen.seed
        out.append("".join(chr(97 + gen.next_mod(25)) for _ in range(length)) + ".com")
        product = seed_a * seed_b
        gen.seed = (product + (product >> 32)) & MASK32
    return out


def _mix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def necurs(day: datetime.date, count: int, seed: int = 9) -> list[str]:
    out = []
    for sequence in range(count):
        state = _mix64((day.toordinal() << 20) ^ (sequence << 8) ^ seed)
        length = state % 15 + 7
        label = []
        for _ in range(length):
            state = _mix64(state)
            label.append(chr(97 + state % 26))
        out.append(f"{''.join(label)}.{NECURS_TLDS[_mix64(state) % len(NECURS_TLDS)]}")
    return out


def suppobox(start: datetime.datetime, count: int) -> list[str]:
    out = []
    epoch = int(start.timestamp())
    for step in range(count):
        seed = (epoch // 512 + step * 7) & MASK32
        first = SUPPOBOX_FIRST[seed % len(SUPPOBOX_FIRST)]
        second = SUPPOBOX_SECOND[(seed // len(SUPPOBOX_FIRST)) % len(SUPPOBOX_SECOND)]
        out.append(f"{first}{second}.net")
    return out


# Families whose labels are random characters: what the detector is built for and the recall target covers.
CHARACTER_FAMILIES = ("conficker_c", "cryptolocker", "ramnit", "necurs")


def family_names(family: str, split: str, count: int) -> list[str]:
    """`count` names of one family; split "dev" (for choosing thresholds) and "eval" use different seeds."""
    base = datetime.date(2024, 3, 1) if split == "dev" else datetime.date(2025, 9, 1)
    names: dict[str, None] = {}  # ordered and without repeats: a family re-draws a name now and then
    day = base
    while len(names) < count:
        need = min(50, count - len(names))
        drawn: list[str] = []
        if family == "conficker_c":
            drawn = conficker_c(day, need)
        elif family == "cryptolocker":
            drawn = cryptolocker(day, need)
        elif family == "ramnit":
            drawn = ramnit(day.toordinal() * 2654435761, need)
        elif family == "necurs":
            drawn = necurs(day, need)
        elif family == "suppobox":
            drawn = suppobox(datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.UTC), need)
        else:
            raise ValueError(f"unknown DGA family {family!r}")
        names.update((name, None) for name in drawn if len(names) < count)
        day += datetime.timedelta(days=1)
    return list(names)
