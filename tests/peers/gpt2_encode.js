#!/usr/bin/env node
// The reference for moe::GPT2Tokenizer: encodes each text of a JSON array of strings with the npm package
// gpt-3-encoder@1.1.4 and writes, for tests/test_tokenizer.cpp, one JSON object:
//   {"node": version, "unicode": version, "classes": [[first, last, "L"|"N"|"S"], ...],
//    "texts": [...], "ids": [[...], ...]}
// where classes are the runs of code points in \p{L}, \p{N} and \s as this node's regex sees them (every
// other code point is in none). The C++ test compares them with ICU's (moe::detail::gpt2::char_class) on
// every code point that ICU's Unicode version assigns, and requires them equal; node's Unicode may be newer.
//
//     NODE_PATH=data/npm/node_modules node tests/peers/gpt2_encode.js tests/data/gpt2_texts.json OUT.json
//
// Without the package it exits with 77, which ctest reads as skipped, and removes OUT so that no stale
// file is compared; with CI=true it fails instead, because CI must run the comparison.
'use strict';
const fs = require('fs');

const [textsPath, outPath] = process.argv.slice(2);
if (!textsPath || !outPath) {
  console.error('usage: node gpt2_encode.js TEXTS.json OUT.json');
  process.exit(2);
}
fs.rmSync(outPath, {force: true});

let encoder;
try {
  encoder = require('gpt-3-encoder');
} catch (e) {
  const ci = process.env.CI === 'true';
  console.error(`gpt2_encode.js: cannot load the npm package gpt-3-encoder (${e.code || e.message}); ` +
                'scripts/fetch-data.sh installs it in data/npm, found through NODE_PATH' +
                (ci ? '' : '; skipping'));
  process.exit(ci ? 1 : 77);
}
const version = require('gpt-3-encoder/package.json').version;
if (version !== '1.1.4') {
  console.error(`gpt2_encode.js: found gpt-3-encoder ${version}, the reference is 1.1.4`);
  process.exit(1);
}

const texts = JSON.parse(fs.readFileSync(textsPath, 'utf8'));
if (!Array.isArray(texts) || !texts.every(t => typeof t === 'string')) {
  console.error(`gpt2_encode.js: ${textsPath}: expected a JSON array of strings`);
  process.exit(1);
}
const ids = texts.map(text => encoder.encode(text));
ids.forEach((row, i) => {
  if (row.some(id => !Number.isInteger(id))) {
    console.error(`gpt2_encode.js: text ${i} gave a non-integer id: ${JSON.stringify(row)}`);
    process.exit(1);
  }
});

const tests = [['L', /^\p{L}$/u], ['N', /^\p{N}$/u], ['S', /^\s$/u]];
const classes = [];
let run = null;
for (let c = 0; c <= 0x10ffff; c++) {
  const s = String.fromCodePoint(c);
  const found = tests.find(([, re]) => re.test(s));
  const cls = found ? found[0] : null;
  if (run && run[2] === cls && run[1] === c - 1) run[1] = c;
  else if (cls) classes.push(run = [c, c, cls]);
  else run = null;
}

const out = {node: process.versions.node, unicode: process.versions.unicode, classes, texts, ids};
fs.writeFileSync(outPath, JSON.stringify(out) + '\n');
console.log(`gpt2_encode.js: ${texts.length} texts encoded by gpt-3-encoder ${version} on node ${out.node} ` +
            `(Unicode ${out.unicode}) -> ${outPath}`);
