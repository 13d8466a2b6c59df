#!/usr/bin/env python3
"""Writes the Laplace-LoRA Workbench's sample datasets under sample_data/.

Every item is generated here from templates and word lists written for this project; no third-party
data is copied. Python 3 standard library only; deterministic (fixed seed), so running it again
rewrites byte-identical files.

    python3 scripts/make_sample_data.py [--out sample_data] [--seed 20240601]

The tasks lean on what a small language model already knows about everyday words (which category a
word belongs to, opposites, capitals, the mood of a short review, what a coat or a fan is for), so
that SmolLM2-135M-Instruct can learn the answer format from a few dozen examples, while a small
training set still lets fine-tuning overfit and become overconfident.

Datasets (each with train.jsonl / validation.jsonl / test.jsonl, 100 / 50 / 100 items):
  compare4/  4-way multiple choice, generic `mcq` JSONL (question, choices, answer index, id)
  yesno/     yes/no questions over a short passage, BoolQ JSONL (question, passage, answer bool, id)
  cloze2/    two-option cloze, WinoGrande JSONL (qID, sentence with _, option1, option2, answer "1"/"2")

Each dataset mixes a few templates in turn (so no single surface trick solves it) and balances the
answers in every split (answer positions 0-3 / true and false / option 1 and option 2).
"""

import argparse
import json
import os
import random

SEED = 20240601
SIZES = {"train": 100, "validation": 50, "test": 100}

NAMES = [
    "Alice", "Ben", "Chloe", "Daniel", "Emma", "Felix", "Grace", "Hugo", "Isla", "Jack",
    "Kira", "Leo", "Maya", "Noah", "Olivia", "Peter", "Quinn", "Rosa", "Sam", "Tara",
    "Umar", "Vera", "Will", "Yara", "Zoe",
]

# Categories of everyday words. No word is in two categories (no "orange", no "light").
CATEGORIES = {
    "fruit": ["apple", "banana", "cherry", "grape", "mango", "pear", "plum", "peach", "lemon", "strawberry",
              "pineapple", "watermelon"],
    "animal": ["dog", "cat", "horse", "cow", "tiger", "lion", "elephant", "rabbit", "monkey", "sheep", "bear",
               "giraffe"],
    "colour": ["red", "blue", "green", "yellow", "purple", "pink", "black", "white", "brown", "grey"],
    "tool": ["hammer", "saw", "drill", "wrench", "screwdriver", "shovel", "axe", "pliers", "rake", "chisel"],
    "country": ["France", "Japan", "Brazil", "Canada", "Egypt", "India", "Italy", "Mexico", "Germany", "Spain",
                "China", "Kenya"],
    "number": ["seven", "twelve", "three", "nine", "forty", "eight", "five", "twenty", "six", "eleven"],
    "vehicle": ["car", "bus", "train", "bicycle", "truck", "boat", "airplane", "tractor", "motorcycle", "ship"],
    "body part": ["hand", "foot", "nose", "ear", "elbow", "knee", "finger", "shoulder", "mouth", "eye"],
    "piece of clothing": ["shirt", "jacket", "sock", "scarf", "sweater", "glove", "hat", "skirt", "coat", "dress"],
    "musical instrument": ["piano", "violin", "guitar", "flute", "drum", "trumpet", "harp", "cello"],
}
# Categories whose members are things one can hold or see a picture of (for "a picture of a ...").
THING_CATEGORIES = ["fruit", "animal", "tool", "vehicle", "piece of clothing", "musical instrument"]

# Pairs of opposites; no word is in two pairs, and no word of one pair is an opposite of a word of
# another (so a distractor is never a second right answer).
OPPOSITES = [
    ("hot", "cold"), ("big", "small"), ("day", "night"), ("up", "down"), ("fast", "slow"), ("happy", "sad"),
    ("young", "old"), ("open", "closed"), ("light", "dark"), ("wet", "dry"), ("tall", "short"),
    ("full", "empty"), ("early", "late"), ("hard", "soft"), ("loud", "quiet"), ("rich", "poor"),
    ("strong", "weak"), ("win", "lose"), ("good", "bad"), ("inside", "outside"), ("left", "right"),
    ("first", "last"), ("thick", "thin"), ("clean", "dirty"), ("push", "pull"), ("buy", "sell"),
    ("summer", "winter"), ("north", "south"), ("love", "hate"), ("sweet", "sour"),
]

CAPITALS = [
    ("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Germany", "Berlin"), ("Spain", "Madrid"),
    ("England", "London"), ("Russia", "Moscow"), ("Egypt", "Cairo"), ("China", "Beijing"), ("Greece", "Athens"),
    ("Portugal", "Lisbon"), ("Austria", "Vienna"), ("Ireland", "Dublin"), ("Norway", "Oslo"),
    ("Thailand", "Bangkok"), ("Kenya", "Nairobi"),
]


def art(word):
    """The indefinite article for a word: "a" (fruit), "an" (animal)."""
    return "an" if word[0] in "aeiou" else "a"


# ------------------------------------------------------------------------------------------------
# compare4: which of four words is in a category / is the opposite of a word / is a capital


def compare4_problem(rng, kind):
    """Returns (question, correct, [3 distractors]) for one template."""
    if kind == "category":
        cat = rng.choice(sorted(CATEGORIES))
        correct = rng.choice(CATEGORIES[cat])
        other_cats = rng.sample([c for c in sorted(CATEGORIES) if c != cat], 3)
        others = [rng.choice(CATEGORIES[c]) for c in other_cats]
        q = rng.choice(["Which of these is {} {}?", "Which word names {} {}?"]).format(art(cat), cat)
        return q, correct, others
    if kind == "opposite":
        pair = rng.choice(OPPOSITES)
        word, correct = pair if rng.random() < 0.5 else pair[::-1]
        others = [rng.choice(p) for p in rng.sample([p for p in OPPOSITES if p != pair], 3)]
        q = rng.choice(["Which word is the opposite of \"{}\"?", "Which word means the opposite of {}?"]).format(word)
        return q, correct, others
    if kind == "capital":
        country, correct = rng.choice(CAPITALS)
        others = [c for _, c in rng.sample([p for p in CAPITALS if p[0] != country], 3)]
        q = rng.choice(["Which city is the capital of {}?", "Which of these cities is the capital of {}?"]).format(country)
        return q, correct, others
    raise ValueError(kind)


COMPARE4_KINDS = ["category", "opposite", "capital"]


def make_compare4(rng):
    seen = set()
    out = {}
    for split, n in SIZES.items():
        problems = []
        while len(problems) < n:
            kind = COMPARE4_KINDS[len(problems) % len(COMPARE4_KINDS)]
            q, correct, others = compare4_problem(rng, kind)
            key = (q, correct, tuple(sorted(others)))
            if key in seen:
                continue
            seen.add(key)
            problems.append((q, correct, others))
        rng.shuffle(problems)
        rows = []
        for i, (q, correct, others) in enumerate(problems):
            answer = i % 4  # balanced answer positions
            others = others[:]
            rng.shuffle(others)
            choices = others[:answer] + [correct] + others[answer:]
            rows.append({"id": f"compare4-{split}-{i + 1:04d}", "question": q, "choices": choices, "answer": answer})
        rng.shuffle(rows)
        out[split] = rows
    return out


# ------------------------------------------------------------------------------------------------
# yesno: a one-sentence passage and a yes/no question about it (BoolQ layout)

GOOD_WORDS = ["delicious", "friendly", "wonderful", "excellent", "lovely", "fantastic", "comfortable", "great",
              "beautiful", "perfect"]
BAD_WORDS = ["awful", "rude", "terrible", "horrible", "dirty", "disgusting", "boring", "broken", "noisy",
             "disappointing"]
REVIEWED = [("restaurant", "the food"), ("hotel", "the room"), ("film", "the story"), ("café", "the coffee"),
            ("shop", "the service"), ("concert", "the music"), ("museum", "the guide"), ("book", "the ending")]
MARKET_CATS = ["fruit", "animal", "tool", "piece of clothing", "musical instrument", "vehicle"]


def yesno_problem(rng, kind, want):
    """Returns (passage, question) whose answer is `want`."""
    if kind == "picture":
        name = rng.choice(NAMES)
        cat = rng.choice(THING_CATEGORIES)
        word = rng.choice(CATEGORIES[cat])
        asked = cat if want else rng.choice([c for c in THING_CATEGORIES if c != cat])
        passage = rng.choice(["{n} is holding a picture of {a} {w}.", "{n} drew {a} {w} on the card."]).format(
            n=name, a=art(word), w=word)
        q = f"Is the picture of {art(asked)} {asked}?"
        return passage, q
    if kind == "review":
        name = rng.choice(NAMES)
        place, part = rng.choice(REVIEWED)
        good = want
        words = rng.sample(GOOD_WORDS if good else BAD_WORDS, 2)
        passage = f"{name} said that the {place} was {words[0]} and {part} was {words[1]}."
        q = rng.choice([f"Did {name} like the {place}?", f"Was {name} happy with the {place}?"])
        return passage, q
    if kind == "opposite":
        name = rng.choice(NAMES)
        pair = rng.choice(OPPOSITES)
        a, b = pair if rng.random() < 0.5 else pair[::-1]
        if not want:
            other = rng.choice([p for p in OPPOSITES if p != pair])
            b = rng.choice(other)
        passage = f"On the word test, {name} wrote \"{a}\" next to \"{b}\"."
        q = f"Is \"{b}\" the opposite of \"{a}\"?"
        return passage, q
    if kind == "capital":
        name = rng.choice(NAMES)
        country, city = rng.choice(CAPITALS)
        if not want:
            city = rng.choice([c for k, c in CAPITALS if k != country])
        passage = f"{name} is reading a travel guide about {city}."
        q = f"Is {city} the capital of {country}?"
        return passage, q
    raise ValueError(kind)


YESNO_KINDS = ["picture", "review", "opposite", "capital"]


def make_yesno(rng):
    seen = set()
    out = {}
    for split, n in SIZES.items():
        rows = []
        while len(rows) < n:
            k = len(rows)
            kind = YESNO_KINDS[(k // 2) % len(YESNO_KINDS)]
            want = k % 2 == 0  # balanced: half true, half false
            passage, q = yesno_problem(rng, kind, want)
            if (passage, q) in seen:
                continue
            seen.add((passage, q))
            rows.append({"id": f"yesno-{split}-{k + 1:04d}", "question": q, "passage": passage, "answer": want})
        rng.shuffle(rows)
        out[split] = rows
    return out


# ------------------------------------------------------------------------------------------------
# cloze2: a sentence with one blank and two options (WinoGrande layout); the wrong option is a word
# of the same kind taken from another item, so only knowing the words tells them apart

WEATHER = {
    "cold": ["put on a warm coat", "wore thick gloves", "sat close to the heater", "lit a fire in the stove",
             "wrapped up in a woolly scarf"],
    "hot": ["turned on the fan", "went for a swim", "bought an ice cream", "wore shorts and sandals",
            "sat in the shade"],
}
# word, same-meaning word
SYNONYMS = [
    ("big", "large"), ("happy", "glad"), ("fast", "quick"), ("start", "begin"), ("rich", "wealthy"),
    ("tiny", "little"), ("shut", "closed"), ("correct", "right"), ("easy", "simple"), ("silent", "quiet"),
    ("scared", "afraid"), ("shout", "yell"), ("clever", "smart"), ("angry", "mad"), ("sick", "ill"),
    ("below", "under"),
]


def cloze2_item(rng, kind):
    """Returns (sentence, right option, wrong option)."""
    name = rng.choice(NAMES)
    if kind == "category":
        c1, c2 = rng.sample(THING_CATEGORIES, 2)
        w = rng.choice(CATEGORIES[c1])
        return f"{art(w).capitalize()} {w} is a kind of _ that most people know.", c1, c2
    if kind == "opposite":
        pair = rng.choice(OPPOSITES)
        word, right = pair if rng.random() < 0.5 else pair[::-1]
        wrong = rng.choice(rng.choice([p for p in OPPOSITES if p != pair]))
        return f"{name} knows that the opposite of \"{word}\" is _ .", right, wrong
    if kind == "meaning":
        pair = rng.choice(SYNONYMS)
        word, right = pair if rng.random() < 0.5 else pair[::-1]
        wrong = rng.choice(rng.choice([p for p in SYNONYMS if p != pair]))
        return f"{name} learned that the word _ means the same as \"{word}\".", right, wrong
    if kind == "capital":
        (country, city), (other, _) = rng.sample(CAPITALS, 2)
        return f"{name} flew to {city}, the capital of _ , for a holiday.", country, other
    if kind == "weather":
        right = rng.choice(["cold", "hot"])
        wrong = "hot" if right == "cold" else "cold"
        return f"{name} {rng.choice(WEATHER[right])} because it was _ outside.", right, wrong
    raise ValueError(kind)


CLOZE2_KINDS = ["category", "opposite", "meaning", "capital", "weather"]


def make_cloze2(rng):
    seen = set()
    out = {}
    for split, n in SIZES.items():
        rows = []
        tries = 0
        while len(rows) < n:
            k = len(rows)
            kind = CLOZE2_KINDS[(k // 2) % len(CLOZE2_KINDS)]
            sent, right, wrong = cloze2_item(rng, kind)
            if (sent, right, wrong) in seen:
                tries += 1
                if tries > 10000:
                    raise RuntimeError(f"cloze2: too few distinct {kind} items")
                continue
            seen.add((sent, right, wrong))
            first = k % 2 == 0  # balanced: the right option is option1 in half the items
            o1, o2 = (right, wrong) if first else (wrong, right)
            rows.append({"qID": f"cloze2-{split}-{k + 1:04d}", "sentence": sent,
                         "option1": o1, "option2": o2, "answer": "1" if first else "2"})
        rng.shuffle(rows)
        out[split] = rows
    return out


# ------------------------------------------------------------------------------------------------


def write_jsonl(path, rows):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "sample_data"))
    ap.add_argument("--seed", type=int, default=SEED)
    args = ap.parse_args()
    makers = {"compare4": make_compare4, "yesno": make_yesno, "cloze2": make_cloze2}
    for i, (name, make) in enumerate(makers.items()):
        rng = random.Random(args.seed * 1000 + i)
        splits = make(rng)
        d = os.path.join(args.out, name)
        os.makedirs(d, exist_ok=True)
        for split, rows in splits.items():
            write_jsonl(os.path.join(d, f"{split}.jsonl"), rows)
        print(f"{name}: " + ", ".join(f"{s} {len(r)}" for s, r in splits.items()))


if __name__ == "__main__":
    main()
