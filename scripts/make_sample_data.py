#!/usr/bin/env python3
"""Writes the Laplace-LoRA Workbench's sample datasets under sample_data/.

Every item is generated here from templates and word lists written for this project; no third-party
data is copied. Python 3 standard library only; deterministic (fixed seed), so running it again
rewrites byte-identical files.

    python3 scripts/make_sample_data.py [--out sample_data] [--seed 20240601]

Datasets (each with train.jsonl / validation.jsonl / test.jsonl, 100 / 50 / 100 items):
  compare4/  4-way multiple choice, generic `mcq` JSONL (question, choices, answer index, id)
  yesno/     yes/no questions over a short passage, BoolQ JSONL (question, passage, answer bool, id)
  cloze2/    two-option cloze, WinoGrande JSONL (qID, sentence with _, option1, option2, answer "1"/"2")
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

# ------------------------------------------------------------------------------------------------
# compare4: which of four is largest / smallest / heaviest / first alphabetically / in a category

# Animals in tiers of clearly different typical weight (lightest first).
ANIMAL_TIERS = [
    ["ant", "fly", "bee", "ladybug"],
    ["mouse", "hamster", "sparrow", "frog"],
    ["cat", "rabbit", "chicken", "duck"],
    ["sheep", "goat", "deer", "kangaroo"],
    ["horse", "cow", "camel", "moose"],
    ["elephant", "hippopotamus", "rhinoceros"],
    ["blue whale"],
]

CATEGORIES = {
    "fruit": ["apple", "banana", "cherry", "grape", "mango", "pear", "plum", "peach", "lemon", "orange"],
    "animal": ["tiger", "zebra", "rabbit", "horse", "wolf", "otter", "camel", "monkey", "parrot", "lion"],
    "colour": ["red", "blue", "green", "yellow", "purple", "brown", "pink", "black", "white", "grey"],
    "vehicle": ["car", "bus", "train", "bicycle", "truck", "tractor", "boat", "airplane", "scooter", "tram"],
    "tool": ["hammer", "wrench", "saw", "screwdriver", "drill", "shovel", "chisel", "pliers", "rake", "axe"],
    "musical instrument": ["piano", "violin", "guitar", "flute", "drum", "trumpet", "harp", "cello", "banjo", "clarinet"],
    "piece of clothing": ["shirt", "jacket", "sock", "scarf", "sweater", "glove", "hat", "skirt", "coat", "boot"],
}

WORDS = [
    "anchor", "basket", "candle", "dragon", "engine", "forest", "garden", "harbor", "island", "jacket",
    "kettle", "ladder", "marble", "needle", "orchard", "pencil", "quartz", "rocket", "saddle", "tunnel",
    "umpire", "valley", "window", "yogurt", "zipper", "bridge", "castle", "meadow", "puzzle", "violet",
]


def compare4_problem(rng, kind):
    """Returns (question, correct, [3 distractors]) for one template."""
    if kind in ("largest", "smallest"):
        nums = rng.sample(range(2, 100), 4)
        correct = max(nums) if kind == "largest" else min(nums)
        others = [n for n in nums if n != correct]
        return f"Which number is the {kind}?", str(correct), [str(n) for n in others]
    if kind in ("heaviest", "lightest"):
        tiers = sorted(rng.sample(range(len(ANIMAL_TIERS)), 4))
        animals = [rng.choice(ANIMAL_TIERS[t]) for t in tiers]
        correct = animals[-1] if kind == "heaviest" else animals[0]
        others = [a for a in animals if a != correct]
        return f"Which animal is the {kind}?", correct, others
    if kind == "alphabetical":
        while True:
            words = rng.sample(WORDS, 4)
            if len({w[0] for w in words}) == 4:
                break
        correct = min(words)
        return "Which word comes first in alphabetical order?", correct, [w for w in words if w != correct]
    if kind == "category":
        cat = rng.choice(sorted(CATEGORIES))
        correct = rng.choice(CATEGORIES[cat])
        other_cats = rng.sample([c for c in sorted(CATEGORIES) if c != cat], 3)
        others = [rng.choice(CATEGORIES[c]) for c in other_cats]
        article = "an" if cat[0] in "aeiou" else "a"
        return f"Which of these is {article} {cat}?", correct, others
    raise ValueError(kind)


COMPARE4_KINDS = ["largest", "smallest", "heaviest", "lightest", "alphabetical", "category"]


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
# yesno: a short invented passage and a question whose answer follows from it (BoolQ layout)

COLOURS = ["red", "blue", "green", "yellow", "black", "white", "orange", "purple"]
BELONGINGS = ["bicycle", "umbrella", "backpack", "scarf", "notebook", "kite", "mug", "lamp", "jacket", "wallet"]
PLACES = ["library", "museum", "bakery", "park", "post office", "market", "cinema", "swimming pool", "zoo", "harbour"]
ROOMS = ["kitchen", "bedroom", "garage", "attic", "hallway", "bathroom", "cellar", "living room"]
THINGS = ["keys", "scissors", "blanket", "toolbox", "flashlight", "chessboard", "teapot", "radio"]
SHOPS = [("bakery", "loaves of bread"), ("flower shop", "bunches of tulips"), ("bookshop", "novels"),
         ("café", "cups of coffee"), ("toy shop", "kites"), ("fruit stall", "melons")]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]


PLURAL_THINGS = {"keys", "scissors"}


def be(thing):
    return "are" if thing in PLURAL_THINGS else "is"


def art(word):
    """The indefinite article for a word: "a" (red), "an" (orange)."""
    return "an" if word[0] in "aeiou" else "a"


def yesno_problem(rng, kind, want):
    """Returns (passage, question, answer) with answer == want."""
    if kind == "belongings":
        a, b = rng.sample(NAMES, 2)
        (i1, i2, i3) = rng.sample(BELONGINGS, 3)
        (c1, c2, c3) = rng.sample(COLOURS, 3)
        passage = f"{a} has {art(c1)} {c1} {i1} and {art(c2)} {c2} {i2}. {b} has {art(c3)} {c3} {i3}."
        if want:
            q = rng.choice([f"Does {a} have {art(c1)} {c1} {i1}?", f"Does {a} have {art(c2)} {c2} {i2}?", f"Does {b} have {art(c3)} {c3} {i3}?"])
        else:
            wrong = rng.choice([c for c in COLOURS if c not in (c1, c2, c3)])
            q = rng.choice([f"Does {a} have {art(c3)} {c3} {i3}?", f"Does {b} have {art(c1)} {c1} {i1}?", f"Does {a} have {art(wrong)} {wrong} {i1}?"])
        return passage, q, want
    if kind == "sales":
        shop, goods = rng.choice(SHOPS)
        d1, d2 = rng.sample(DAYS, 2)
        x, y = rng.sample(range(3, 60), 2)
        passage = f"On {d1} the {shop} sold {x} {goods}. On {d2} it sold {y} {goods}."
        more = rng.random() < 0.5
        q = f"Did the {shop} sell {'more' if more else 'fewer'} {goods} on {d1} than on {d2}?"
        ans = (x > y) if more else (x < y)
        if ans != want:
            passage = f"On {d1} the {shop} sold {y} {goods}. On {d2} it sold {x} {goods}."
        return passage, q, want
    if kind == "order":
        a = rng.choice(NAMES)
        p1, p2, p3 = rng.sample(PLACES, 3)
        passage = (f"In the morning {a} went to the {p1}. After lunch {a} visited the {p2}, "
                   f"and in the evening {a} stopped at the {p3}.")
        order = [p1, p2, p3]
        i, j = rng.sample(range(3), 2)
        if (i < j) != want:
            i, j = j, i
        q = f"Did {a} go to the {order[i]} before the {order[j]}?"
        return passage, q, want
    if kind == "location":
        t1, t2 = rng.sample(THINGS, 2)
        r1, r2 = rng.sample(ROOMS, 2)
        passage = f"The {t1} {be(t1)} in the {r1}, and the {t2} {be(t2)} in the {r2}."
        room = r1 if want else rng.choice([r2, rng.choice([r for r in ROOMS if r not in (r1, r2)])])
        q = f"{be(t1).capitalize()} the {t1} in the {room}?"
        return passage, q, want
    if kind == "age":
        a, b = rng.sample(NAMES, 2)
        x, y = rng.sample(range(6, 80), 2)
        older = rng.random() < 0.5
        if ((x > y) if older else (x < y)) != want:
            x, y = y, x
        passage = f"{a} is {x} years old and {b} is {y} years old."
        q = f"Is {a} {'older' if older else 'younger'} than {b}?"
        return passage, q, want
    raise ValueError(kind)


YESNO_KINDS = ["belongings", "sales", "order", "location", "age"]


def make_yesno(rng):
    seen = set()
    out = {}
    for split, n in SIZES.items():
        rows = []
        while len(rows) < n:
            k = len(rows)
            kind = YESNO_KINDS[(k // 2) % len(YESNO_KINDS)]
            want = k % 2 == 0  # balanced: half true, half false
            passage, q, ans = yesno_problem(rng, kind, want)
            if (passage, q) in seen:
                continue
            seen.add((passage, q))
            rows.append({"id": f"yesno-{split}-{k + 1:04d}", "question": q, "passage": passage, "answer": ans})
        rng.shuffle(rows)
        out[split] = rows
    return out


# ------------------------------------------------------------------------------------------------
# cloze2: WinoGrande-style twin sentences; a trigger word flips which option fills the blank

FIT_PAIRS = [("piano", "elevator"), ("sofa", "van"), ("cake", "box"), ("laptop", "drawer"), ("painting", "car"),
             ("tree", "pot"), ("guitar", "locker"), ("mattress", "trunk"), ("bicycle", "shed"), ("pumpkin", "basket"),
             ("statue", "crate"), ("blanket", "suitcase"), ("bookshelf", "truck"), ("pizza", "oven"), ("fish", "bowl")]
FIT_ADJ = [("big", "small"), ("large", "tiny"), ("wide", "narrow"), ("long", "short")]
BREAK_PAIRS = [("glass", "floor"), ("vase", "tiles"), ("egg", "counter"), ("plate", "pavement"), ("mirror", "rock"),
               ("cup", "sink"), ("light bulb", "step"), ("bottle", "driveway"), ("ornament", "table"), ("jar", "stairs")]
BREAK_ADJ = [("fragile", "hard"), ("delicate", "solid"), ("thin", "sturdy")]
HELP_TOPICS = [("fixing the car", "engines"), ("the tax forms", "taxes"), ("the garden", "plants"),
               ("the new computer", "computers"), ("the dinner party", "cooking"), ("the science project", "chemistry"),
               ("the broken bicycle", "bikes"), ("the history essay", "history")]
CONTESTS = [("finished the race ahead of", "ran much", ("faster", "slower")),
            ("won the chess game against", "played more", ("carefully", "carelessly")),
            ("beat", "had practised", ("every day", "very little")),
            ("scored more points than", "was", ("better prepared", "less prepared"))]
GIFT = [("thanked", "had {}received a lovely present", "had {}given a lovely present"),
        ("paid", "had {}bought the old bicycle", "had {}sold the old bicycle")]
SHARE_FOOD = ["sandwich", "pizza", "apple pie", "chocolate bar", "bowl of soup"]


def cloze2_pair(rng, kind):
    """Returns a twin: [(sentence, option1, option2, answer), ...] with opposite answers."""
    if kind == "fit":
        obj, container = rng.choice(FIT_PAIRS)
        big, small = rng.choice(FIT_ADJ)
        s = "The {} did not fit into the {} because the _ was too {}."
        twins = [(s.format(obj, container, big), obj), (s.format(obj, container, small), container)]
        opts = [obj, container]
    elif kind == "break":
        thing, surface = rng.choice(BREAK_PAIRS)
        frag, hard = rng.choice(BREAK_ADJ)
        s = "The {} broke when it fell on the {} because the _ was so {}."
        twins = [(s.format(thing, surface, frag), thing), (s.format(thing, surface, hard), surface)]
        opts = [thing, surface]
    elif kind == "help":
        p1, p2 = rng.sample(NAMES, 2)
        task, topic = rng.choice(HELP_TOPICS)
        s = "{} asked {} for help with {} because _ knew {} about {}."
        twins = [(s.format(p1, p2, task, "a lot", topic), p2), (s.format(p1, p2, task, "very little", topic), p1)]
        opts = [p1, p2]
    elif kind == "contest":
        p1, p2 = rng.sample(NAMES, 2)
        verb, mid, (good, bad) = rng.choice(CONTESTS)
        s = "{} {} {} because _ {} {}."
        twins = [(s.format(p1, verb, p2, mid, good), p1), (s.format(p1, verb, p2, mid, bad), p2)]
        opts = [p1, p2]
    elif kind == "gift":
        p1, p2 = rng.sample(NAMES, 2)
        verb, first, second = rng.choice(GIFT)
        adv = rng.choice(["", "just ", "finally "])
        s = "{} {} {} because _ {}."
        twins = [(s.format(p1, verb, p2, first.format(adv)), p1), (s.format(p1, verb, p2, second.format(adv)), p2)]
        opts = [p1, p2]
    elif kind == "share":
        p1, p2 = rng.sample(NAMES, 2)
        food = rng.choice(SHARE_FOOD)
        s = "{} gave {} half of the {} because _ was {}."
        twins = [(s.format(p1, p2, food, "very hungry"), p2), (s.format(p1, p2, food, "already full"), p1)]
        opts = [p1, p2]
    else:
        raise ValueError(kind)
    if rng.random() < 0.5:
        opts.reverse()
    return [(sent, opts[0], opts[1], "1" if ans == opts[0] else "2") for sent, ans in twins]


CLOZE2_KINDS = ["fit", "break", "help", "contest", "gift", "share"]


def make_cloze2(rng):
    seen = set()
    out = {}
    for split, n in SIZES.items():
        rows = []
        pairs = 0
        while len(rows) < n:
            kind = CLOZE2_KINDS[pairs % len(CLOZE2_KINDS)]
            twin = cloze2_pair(rng, kind)
            key = twin[0][0]
            if key in seen:
                continue
            seen.add(key)
            pairs += 1
            for t, (sent, o1, o2, ans) in enumerate(twin):
                rows.append({"qID": f"cloze2-{split}-{pairs:04d}-{t + 1}", "sentence": sent,
                             "option1": o1, "option2": o2, "answer": ans})
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
