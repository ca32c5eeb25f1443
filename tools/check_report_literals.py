#!/usr/bin/env python3
"""Fails when an example's report code prints a figure it did not measure.

A report states what its own run measured. A number written into the prose of a string literal ("MaxVio
2.46 against 0.50 in a 500-step run") is a finding of some other run, however carefully it was once
measured, and goes stale silently. This script reads the C++ string literals of every example's source
(examples/**/*.cpp, *.hpp; not examples/common/corpora/, which generates data, not reports), keeps the ones
that are prose (two words or more), and reports each number in them that is neither a printf conversion
nor on the allow-list below, and each mention of other runs ("in test runs ..."). Findings of past runs belong in the example's README, with the command that
measured them.

Usage: check_report_literals.py [REPO_ROOT]     (default: the repository holding this script)
Exit status 0 when nothing is found, 1 otherwise (each finding printed as FILE:LINE: "literal": number).
"""

import os
import re
import sys

# Sources that write no report: the corpora build training text, and their templates hold numbers.
EXCLUDED_DIRS = ("examples/common/corpora",)

# The numbers a report may write as literals, as regular expressions that must match the literal text
# around the number (the match must cover the number). Each names why it is not a measured figure; prefer
# printing the run's own value (a preset field, a document:: constant) to adding an entry here.
ALLOWED = [
    # Names that hold digits: data sets, models, files, versions, sections of the documents.
    (r"(?i)\b(?:Qwen1\.5/2/3-MoE|DeepSeek-V2/V3|mnist@1\.1\.0|CIFAR-10|MNIST|GPT-2|DeepSeek-V3|DeepSeekMoE 16B|16B|2T tokens)", "a name"),
    (r"seeds/00\d(?:_\w+\.txt)?|\"MNIST 7 expert\"", "a seed document or its section's title"),
    (r"\bsection 5\b|\bAppendix C\b|Figure 10|Figures? [2-6](?:-4| and 6)?|Tables? [123](?: and 3)?|"
     r"Experiment [123]|[Mm]ethod 2|Findings 1-4|finding 0|[Ff]inding [0-4]|[Pp]hase [12]\b",
     "a section, table, figure or phase of the documents"),
    (r"(?:^|\n)\d\. ", "a numbered list item"),
    (r"\btop-1\b|\btop10\b|top-10%|busiest 10%", "the name of a measure"),
    (r"\b[Ee]xpert [01]\b|expert1|\bnet\.[03]\.\*|experts\.0\.", "an expert's or layer's index, as in the tables"),
    (r"\b0 or (?:a )?7\b|\b0s and 7s\b|0/7|digits 0 and 7|\b0 and 7\b|\b10-class|\(10 classes\)", "the task of seeds/003"),
    (r"trial 1\b|from 1, as Figure 10", "the first trial, which the figures show; layers counted from 1"),
    (r"layer_NN|1\.\.", "a placeholder"),
    (r"\(default \d+\)|\(0: [a-z ]+\)", "a command-line default, or what 0 means for an option"),
    (r"(?:must be (?:in \[|at least )|expected |need at least |needs at least |of the )\d+\b",
     "a bound or a count that an error message names"),
    # The documents' settings and figures, quoted beside ours (seeds/002, 003 and DeepSeek-V3's appendix).
    (r"\d+x\d+(?: x \d+)*|x \d+ x \d+", "an image, kernel or pool size of the documents' models"),
    (r"128/256/256/512|\(128 x width|512 x width|128 x width x 2 x 2|512 x width x 1 x 1", "the document's filter counts"),
    (r"\b4 convolutions\b|1st, 3rd and 4th|1 convolution|stride 1, padding 1|padding 1 so", "the document's model"),
    (r"K = 1\b|\bK = N = 4\b|hidden = 2 x the features|gate is 1 \(K = 1\)|"
     r"pct_start 0\.3, div_factor 25, beta1 cycled 0\.95 -> 0\.85", "a fixed part of the model or schedule"),
    (r"10 epochs|10 trials|1e-5|1e-2|1e-4|1e-3|15 epochs|dropout 0\.2|784-128-128-out|784-256-128-4|"
     r"hidden \{256, 128\}|\b4 experts|4-expert|60,000 train / 10,000 test|10,000 digits|\b42\b|"
     r"out = 2 \(phase 1\) or 10 \(phase 2\)|\(x − 0\.1307\) / 0\.3081",
     "a setting of the documents (seeds/002, seeds/003) or of the Switch Transformer's balancing"),
    (r"at most 3\.46%|above 81%|over 88\.5%|0\.0066|0\.535%|3-33%", "a figure the document states, quoted"),
    (r"64 routed, 2 shared, K = 6|K=6|d_model 2048|27 MoE layers \+ 1 dense|expert width 1408|1 dense SwiGLU block|"
     r"0 \(light yellow\) to 10 \(dark red\)|colour 0 to 10|6\.4 experts", "DeepSeek-V3's / DeepSeekMoE 16B's setup"),
    (r"\{2, 3, 5\}|2, 3 and 5 experts|2 > 3 > 5|from 2 to 3 to 5|2- and 5-expert|\b\d-expert|"
     r"\b[235] experts\b|3- and 5-expert", "the expert counts the experiments compare"),
    # Definitions and identities, not measurements.
    (r"0\.1 when balanced|1 when 6\.4|\b0 when|\b0 for|\b1 when|0\.5 for a clean(?: 2-way)?|100% (?:when|for)|1/N|1 / N|1/K|"
     r"\(1 - 1/N\)|\+1 or -1|at least 1%|at least 99%|uniform: 0\.25|gives 0\.25|log 3 = 1\.099|sqrt\(90\) / 2 = "
     r"4\.74 with 10 classes and 2 experts|\^2|(?i:near 10%)|sums to 1\b|ratio > 1\b|ratio far above 1\b|"
     r"p \(1 - p\)|largest, 0\.25, when both experts score alike|\bgate 1\b",
     "a definition, an identity or chance level"),
    (r"at least 88\.5%|at least 90%|below 5%", "a criterion the report states before judging by it"),
    (r"Zhou et al\. 2022", "a paper's citation"),
    (r"\b0\.\.N\b|\bnot -1\b", "a range of counts, the empty slot's marker"),
]


def strip_comments_and_find_literals(text):
    """Yields (line, literal) for each string literal outside comments; adjacent literals are joined."""
    i, n, line = 0, len(text), 1
    pieces = []  # (line, text) of the literals of the current run of adjacent literals
    last_end = None
    out = []

    def flush():
        if pieces:
            out.append((pieces[0][0], "".join(p for _, p in pieces)))
            pieces.clear()

    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
            continue
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        if text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            line += text.count("\n", i, j)
            i = j
            continue
        if c == "'":  # a character literal
            j = i + 1
            while j < n and text[j] != "'":
                j += 2 if text[j] == "\\" else 1
            i = j + 1
            continue
        if c == '"' and not re.match(r"R$", text[max(0, i - 1):i]):
            j, buf = i + 1, []
            while j < n and text[j] != '"':
                if text[j] == "\\" and j + 1 < n:
                    buf.append({"n": "\n", "t": "\t", '"': '"', "\\": "\\"}.get(text[j + 1], text[j + 1]))
                    j += 2
                else:
                    buf.append(text[j])
                    j += 1
            if last_end is None or text[last_end:i].strip():
                flush()
            pieces.append((line, "".join(buf)))
            line += text.count("\n", i, j)
            i = j + 1
            last_end = i
            continue
        if not c.isspace() and last_end is not None and i >= last_end:
            flush()
            last_end = None
        i += 1
    flush()
    return out


# printf conversions (%.2f, %5d, %02zu, %lld, %.*f, %%), which are not figures. No space flag: "90% of" is
# prose, not "% o".
FORMAT = re.compile(r"%(?:%|[-+#0]*(?:\d+|\*)?(?:\.(?:\d+|\*))?(?:hh|h|ll|l|z|j|t|L)?[diouxXeEfFgGcspaA])")
# A number that stands alone: not part of a word ("CIFAR-10", "GPT-2", "layer_01"), with its decimals,
# exponent and percent sign.
NUMBER = re.compile(r"(?<![\w.])(?<![A-Za-z]-)\d+(?:,\d{3})*(?:\.\d+)?(?:[eE][-+]?\d+)?%?")
PROSE = re.compile(r"[A-Za-z]{2,}\W+[A-Za-z]{2,}")
# Words that cite runs other than the report's own, with or without numbers.
OTHER_RUNS = re.compile(r"(?i)\b(?:test runs?|runs? outside this program)\b")


def findings_in(literal):
    text = FORMAT.sub(lambda m: " " * len(m.group(0)), literal)
    if not PROSE.search(text):
        return []
    allowed_spans = [m.span() for pattern, _ in ALLOWED for m in re.finditer(pattern, text)]
    found = [f"'{m.group(0)}'" for m in OTHER_RUNS.finditer(text)]
    for m in NUMBER.finditer(text):
        start, end = m.span()
        if not any(a <= start and end <= b for a, b in allowed_spans):
            found.append(m.group(0))
    return found


def source_files(root):
    examples = os.path.join(root, "examples")
    for directory, _, files in os.walk(examples):
        relative = os.path.relpath(directory, root).replace(os.sep, "/")
        if any(relative == e or relative.startswith(e + "/") for e in EXCLUDED_DIRS):
            continue
        for name in sorted(files):
            if name.endswith((".cpp", ".hpp")):
                yield os.path.join(directory, name)


def main(argv):
    root = argv[1] if len(argv) > 1 else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    count = 0
    files = sorted(source_files(root))
    if not files:
        print(f"check_report_literals: no example sources under {root}/examples", file=sys.stderr)
        return 1
    for path in files:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for line, literal in strip_comments_and_find_literals(text):
            numbers = findings_in(literal)
            if numbers:
                count += len(numbers)
                shown = literal if len(literal) <= 160 else literal[:157] + "..."
                print(f"{os.path.relpath(path, root)}:{line}: {', '.join(numbers)} in {shown!r}")
    if count:
        print(f"\n{count} figure(s) or mention(s) of other runs in report prose: print the run's value, move a "
              "past finding to the example's README with the command that measured it, or, for a constant that "
              "is no finding, add it to ALLOWED in tools/check_report_literals.py with the reason.")
        return 1
    print(f"check_report_literals: {len(files)} example sources, no unmeasured figure in their prose")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
