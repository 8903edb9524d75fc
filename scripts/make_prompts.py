#!/usr/bin/env python3
"""Writes tests/data/prompts/*.txt: a mixed text prompt set for `swarm calibrate/eval --prompts`.

Four kinds of text (stories, dialogue, lists, code-like text), composed from hand-written
templates and word lists below with a fixed seed, so the files are reproducible. Each kind gives
80 distinct lines; the even-numbered lines of each kind go to the calibration files, the odd ones
to the test files, so calibration and test share no line. Run from the repository root:
    python3 scripts/make_prompts.py
"""
import random

rng = random.Random(15)
names = ["Lily", "Tom", "Mia", "Ben", "Sara", "Max", "Anna", "Sam", "Lucy", "Jack", "Zoe", "Leo"]
animals = ["cat", "dog", "bird", "frog", "bunny", "fox", "bear", "duck", "mouse", "fish"]
things = ["ball", "kite", "red box", "big hat", "toy car", "blue cup", "little boat", "book",
          "shiny rock", "green leaf", "cake", "drum"]
places = ["the park", "the garden", "the forest", "the beach", "school", "the farm", "the river",
          "the shop", "the hill", "the kitchen"]
feelings = ["happy", "sad", "scared", "excited", "tired", "proud", "angry", "surprised"]

story_t = [
    "Once upon a time, {n} found a {t} in {p}.",
    "One day, {n} and a {a} went to {p} to play.",
    "{n} was {f} because the {t} was gone.",
    "The {a} looked at {n} and said, \"Can I have the {t}?\"",
    "After lunch, {n} ran to {p} with a {t}.",
    "Every morning, the little {a} sang near {p}.",
    "{n} wanted to share the {t} with a {f} {a}.",
    "It was a sunny day, and {n} saw a {a} in {p}.",
    "Mom told {n} to be careful with the {t}.",
    "The {a} was lost in {p}, and {n} helped it find home.",
]
dialogue_t = [
    "Q: Where is the {t}? A: It is in {p}.",
    "{n}: Do you want to play? {m}: Yes, let's go to {p}!",
    "User: How do I feel {f}? Assistant: Take a deep breath and rest.",
    "{n}: I lost my {t}. {m}: I will help you look for it.",
    "Teacher: What animal says hello? {n}: The {a}!",
    "{n}: Why are you {f}? {m}: Because my {a} ran away.",
    "User: Tell me about {p}. Assistant: {p} is a nice place to visit.",
    "{n}: Can I borrow your {t}? {m}: Sure, but give it back soon.",
    "Q: What did {n} find? A: A {t} and a small {a}.",
    "{m} asked, \"Are you coming to {p}?\" and {n} said, \"Not today.\"",
]
list_t = [
    "Shopping list: milk, bread, {t}, apples, eggs.",
    "Things to pack: a {t}, a hat, {n2} socks, and water.",
    "1. Wake up 2. Feed the {a} 3. Go to {p} 4. Read a book",
    "Animals at {p}: {a}, {a2}, {a3}.",
    "Todo: - clean the {t} - call {n} - walk the {a}",
    "Top {k} games: tag, hide and seek, jump rope, ball.",
    "{n} likes these colors: red, blue, {c}, and green.",
    "Steps: first wash the {t}, then dry it, then put it away.",
    "Days: Monday {p}, Tuesday home, Wednesday {p2}.",
    "Names in class: {n}, {m}, {o}, and {q}.",
]
code_t = [
    "def count_{a}s(items): return len([x for x in items if x == '{a}'])",
    "for i in range({k}): print(i * {k2})",
    "if {v} > {k}: {v} = {v} - 1",
    "let {v} = [{k}, {k2}, {k3}]; console.log({v}.length);",
    "x = {k}\ny = x + {k2}",
    "while ({v} < {k}) {{ {v}++; }}",
    "name = \"{n}\"; print(\"hello, \" + name)",
    "SELECT name FROM pets WHERE kind = '{a}';",
    "{{\"name\": \"{n}\", \"pet\": \"{a}\", \"age\": {k}}}",
    "return {v} * {k} + {k2}  # {f} result",
]
colors = ["purple", "pink", "orange", "white", "black", "brown", "gold"]
varnames = ["x", "y", "count", "total", "n", "i", "score", "size", "num", "val"]


def fill(t):
    n, m, o, q = rng.sample(names, 4)
    a, a2, a3 = rng.sample(animals, 3)
    p, p2 = rng.sample(places, 2)
    line = t.format(n=n, m=m, o=o, q=q, a=a, a2=a2, a3=a3, t=rng.choice(things), p=p, p2=p2,
                    f=rng.choice(feelings), k=rng.randint(2, 12), k2=rng.randint(1, 9),
                    k3=rng.randint(10, 99), n2=rng.choice(["two", "three", "four"]),
                    c=rng.choice(colors), v=rng.choice(varnames))
    return line.replace("\n", " ")


def kind(templates, count=80):
    out, seen = [], set()
    while len(out) < count:
        line = fill(templates[len(out) % len(templates)])
        if line not in seen:
            seen.add(line)
            out.append(line)
    return out


kinds = {"story": kind(story_t), "dialogue": kind(dialogue_t), "list": kind(list_t),
         "code": kind(code_t)}


def write(path, lines):
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


calib = {k: v[0::2] for k, v in kinds.items()}
test = {k: v[1::2] for k, v in kinds.items()}
# Mixed: the four kinds interleaved.
write("tests/data/prompts/mixed_calib.txt",
      [l for row in zip(*calib.values()) for l in row])
write("tests/data/prompts/mixed_test.txt", [l for row in zip(*test.values()) for l in row])
# Domain shift: calibrate on prose (stories, dialogue), test on structured text (lists, code).
write("tests/data/prompts/prose_calib.txt",
      [l for row in zip(calib["story"], calib["dialogue"]) for l in row])
write("tests/data/prompts/structured_test.txt",
      [l for row in zip(test["list"], test["code"]) for l in row])
