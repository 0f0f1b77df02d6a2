"""The generated "facts" domain: synthetic people, their biographies in varied phrasings, and some Q/A lines.

Knowledge augmentation as in Allen-Zhu & Li, "Physics of Language Models: Part 3.1, Knowledge Storage and
Extraction" (arXiv:2309.14316): every person's attributes come back in many biographies, each time in another
template, sentence order and document, always with the full name (their "multi + permute + fullname" setting);
question/answer lines train the extraction format on a subset of (person, attribute) pairs ("mixed training").
The held-out pairs (`held_out(name, attribute)`, a hash of the pair) never appear as Q/A anywhere in the
corpus, while the person's biography does: those are the knowledge probe's questions (moelab.eval.probes).

The domain is an endless stream of rounds; each round tells every person's biography once, in a seeded shuffled
order, BIOS_PER_DOC people per document ("facts-00000", ...), each document ending with the Q/A lines of its
people's trained pairs. A per-domain byte cap (moelab.data.corpus) keeps as many rounds as fit: about 29 at the
quick study's 200 KB, 220 at the default 1.5 MB, of which a 300-step study (614k tokens, a fifth of them facts)
reads about 70 passes.

Size, measured (tiny-dense, 300 steps of 16 x 128 tokens): with 100 people (14 passes) and with 40 (35 passes)
the model completed every biography prompt with the same value, and answered every question of an attribute
alike; 20 people is the study's setting, about 50 held-out questions.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

from moelab.data.document import Document

SEED = 20261202
N_PEOPLE = 20  # people in the domain: few enough that a 300-step study reads each biography about 70 times
BIOS_PER_DOC = 8
HELD_OUT_FRACTION = 0.5  # of (person, attribute) pairs: their Q/A line is never in the corpus

FIRST_NAMES = (
    "Alice", "Bruno", "Clara", "Dmitri", "Elena", "Farid", "Greta", "Hiro", "Ines", "Jonas", "Keiko", "Lars",
    "Maya", "Nikolai", "Olga", "Pablo", "Quinn", "Rosa", "Stefan", "Tara", "Umar", "Vera", "Walter", "Xenia",
    "Yusuf", "Zora", "Anton", "Beatriz", "Cyrus", "Daria", "Emil", "Fiona", "Gustav", "Hana", "Igor", "Julia",
    "Kofi", "Lena", "Marco", "Nadia", "Oscar", "Priya", "Rafael", "Sofia", "Tomas", "Ursula", "Victor", "Wanda",
)
LAST_NAMES = (
    "Abbott", "Bergman", "Castillo", "Dubois", "Eriksen", "Fischer", "Garcia", "Hoffman", "Ivanova", "Jensen",
    "Kowalski", "Larsen", "Moreau", "Nakamura", "Okafor", "Petrov", "Quist", "Romano", "Schulz", "Tanaka",
    "Ueda", "Vargas", "Weber", "Xu", "Yilmaz", "Zhang", "Almeida", "Brennan", "Costa", "Dietrich", "Engel",
    "Ferreira", "Novak", "Haas", "Ito", "Keller",
)
CITIES = (
    "Lyon", "Oslo", "Porto", "Kyoto", "Dublin", "Krakow", "Seville", "Graz", "Tampere", "Utrecht", "Bergen",
    "Ghent", "Turin", "Brno", "Malmo", "Leeds", "Quebec", "Perth", "Osaka", "Lagos", "Lima", "Cusco", "Hanoi",
    "Pune",
)
UNIVERSITIES = (
    "Northfield University", "Calder College", "Riverside Institute", "Ashbury University", "Eastmoor College",
    "Granite Institute", "Harlow University", "Kestrel College", "Linden University", "Marlow Institute",
    "Oakridge University", "Pembrook College", "Stanmere University", "Westbrook Institute", "Yarrow College",
    "Fenwick University",
)
OCCUPATIONS = (
    "nurse", "architect", "baker", "chemist", "dentist", "electrician", "farmer", "geologist", "historian",
    "journalist", "librarian", "mechanic", "musician", "pilot", "plumber", "translator", "surgeon", "teacher",
    "engineer", "accountant",
)
EMPLOYERS = (
    "Brightwave", "Corvex", "Dunmore Labs", "Elmstead Foods", "Fairline", "Glasshaus", "Halcyon Rail",
    "Ironleaf", "Juniper Bank", "Kilnworks", "Lumeno", "Mossgate", "Northstar Media", "Orbital Tea", "Pinecrest",
    "Quarrystone", "Redfern Energy", "Silverline",
)
YEARS = tuple(str(y) for y in range(1950, 2000))

ATTRIBUTES = ("birth_city", "birth_year", "university", "occupation", "employer")
VALUES: dict[str, tuple[str, ...]] = {"birth_city": CITIES, "birth_year": YEARS, "university": UNIVERSITIES,
                                      "occupation": OCCUPATIONS, "employer": EMPLOYERS}

# One question per attribute: the prompt of a Q/A line ends right before its answer (after "A:").
QUESTIONS = {
    "birth_city": "Q: Where was {name} born? A:",
    "birth_year": "Q: In what year was {name} born? A:",
    "university": "Q: Which university did {name} attend? A:",
    "occupation": "Q: What is the occupation of {name}? A:",
    "employer": "Q: Which company does {name} work for? A:",
}
# Several phrasings of each attribute's sentence in a biography ({a} is "a" or "an" before the occupation).
SENTENCES = {
    "birth_city": ("{name} was born in {v}.", "{name} came into the world in {v}.", "The birthplace of {name} is {v}.",
                   "{name} spent the first years of life in {v}, the city of birth."),
    "birth_year": ("{name} was born in the year {v}.", "{name} was born in {v}.", "The birth year of {name} is {v}.",
                   "{name} arrived in the world in {v}."),
    "university": ("{name} studied at {v}.", "{name} graduated from {v}.", "{name} earned a degree at {v}.",
                   "{name} attended {v}."),
    "occupation": ("{name} works as {a} {v}.", "{name} is {a} {v} by profession.", "By trade, {name} is {a} {v}.",
                   "{name} earns a living as {a} {v}."),
    "employer": ("{name} is employed by {v}.", "{name} works for {v}.", "{name} has a job at {v}.",
                 "{v} employs {name}."),
}


@dataclass(frozen=True)
class Person:
    index: int
    name: str
    attributes: tuple[tuple[str, str], ...]  # (attribute, value) in ATTRIBUTES order

    def value(self, attribute: str) -> str:
        return dict(self.attributes)[attribute]


def _unit(*parts: str) -> float:
    """A uniform-looking number in [0, 1) fixed by the text of `parts`."""
    digest = hashlib.sha256("\0".join(("moelab-facts", *parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@lru_cache(maxsize=8)
def people(n: int = N_PEOPLE, seed: int = SEED) -> tuple[Person, ...]:
    """`n` people with distinct full names and seeded attributes, the same on every run."""
    rng = random.Random(seed)
    names = [f"{first} {last}" for first in FIRST_NAMES for last in LAST_NAMES]
    if n > len(names):
        raise ValueError(f"at most {len(names)} people, asked for {n}")
    chosen = rng.sample(names, n)
    return tuple(Person(i, name, tuple((a, rng.choice(VALUES[a])) for a in ATTRIBUTES))
                 for i, name in enumerate(chosen))


def held_out(name: str, attribute: str) -> bool:
    """Whether the Q/A line of (person, attribute) is kept out of the corpus (a probe question)."""
    return _unit(name, attribute) < HELD_OUT_FRACTION


def question(person: Person, attribute: str) -> tuple[str, str]:
    """(prompt ending in "A:", answer) of a person's attribute."""
    return QUESTIONS[attribute].format(name=person.name), person.value(attribute)


def _article(word: str) -> str:
    return "an" if word[0].lower() in "aeiou" else "a"


def biography(person: Person, rng: random.Random) -> str:
    """One biography: every attribute once, each in a random phrasing, in a random order, with the full name."""
    order = list(ATTRIBUTES)
    rng.shuffle(order)
    sentences = []
    for attribute in order:
        v = person.value(attribute)
        sentences.append(rng.choice(SENTENCES[attribute]).format(name=person.name, v=v, a=_article(v)))
    return " ".join(sentences)


def qa_line(person: Person, attribute: str) -> str:
    prompt, answer = question(person, attribute)
    return f"{prompt} {answer}"


def facts_documents(seed: int = SEED, n_people: int = N_PEOPLE) -> Iterator[Document]:
    """Endless "facts" documents: rounds of every person's biography (BIOS_PER_DOC per document, then their
    trained Q/A lines), reproducible from `seed`."""
    rng = random.Random(seed)
    everyone = list(people(n_people, seed))
    index = 0
    while True:
        order = everyone[:]
        rng.shuffle(order)
        for start in range(0, len(order), BIOS_PER_DOC):
            group = order[start:start + BIOS_PER_DOC]
            bios = [biography(p, rng) for p in group]
            qa = [qa_line(p, a) for p in group for a in ATTRIBUTES if not held_out(p.name, a)]
            rng.shuffle(qa)
            yield Document("facts", f"facts-{index:05d}", "\n\n".join(bios) + "\n\n" + "\n".join(qa) + "\n")
            index += 1


def held_out_pairs(n_people: int = N_PEOPLE, seed: int = SEED) -> list[tuple[Person, str]]:
    """Every (person, attribute) whose Q/A line the corpus never holds, in person then attribute order."""
    return [(p, a) for p in people(n_people, seed) for a in ATTRIBUTES if held_out(p.name, a)]
