"""The documentation's command blocks that tests read: a fenced block on the line right after `<!-- test: NAME -->`.

Only marked blocks are read, never prose, so the text around them can be edited freely."""
import os
import re

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_MARKED = re.compile(r'^<!-- test: ([\w-]+) -->\n```(\w*)\n(.*?)^```[ \t]*$', re.S | re.M)


def marked_blocks(path, name, lang=None):
    """The bodies of the blocks marked `name` in the file `path` (relative to the repository root), in order."""
    with open(os.path.join(REPO_ROOT, path), encoding='utf-8') as f:
        text = f.read()
    blocks = [(block_lang, body) for mark, block_lang, body in _MARKED.findall(text) if mark == name]
    assert blocks, f'{path} has no block marked <!-- test: {name} -->'
    return [body for block_lang, body in blocks if lang is None or block_lang == lang]


def block_commands(body):
    """The command lines of a bash block: continuations joined, comments and blank lines dropped."""
    lines = body.replace('\\\n', ' ').splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith('#')]
