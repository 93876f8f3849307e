#!/usr/bin/python3
"""Generates actors/payload_schema.c from Apple's device-management YAML.

Usage: gen-payload-schema.py SPEC_DIR OUTPUT.c

SPEC_DIR is spec/apple-device-management (the vendored, unmodified YAML). Every payload
key of mdm/profiles/*.yaml and every parameter of mdm/commands/*.yaml becomes one row of a
C table (name, type, presence, rangelist, range, format, nested keys), so that mdmd
validates settings against exactly what Apple publishes. Keys macOS does not have (macOS
'introduced: n/a', or 'removed') are left out. The output is deterministic (files sorted by
name, keys in file order) and committed; a meson test regenerates it and diffs.

YAML anchors make some key lists shared, and one recursive (applicationaccess.new's
subApps); tables are emitted once per list object, forward-declared, so both just work.
"""
import glob
import os
import sys

import yaml

TYPES = {
    '<string>': 'MDM_PT_STRING', '<boolean>': 'MDM_PT_BOOL', '<integer>': 'MDM_PT_INT',
    '<real>': 'MDM_PT_REAL', '<data>': 'MDM_PT_DATA', '<date>': 'MDM_PT_DATE',
    '<dictionary>': 'MDM_PT_DICT', '<array>': 'MDM_PT_ARRAY', '<any>': 'MDM_PT_ANY',
}


def on_macos(key):
    """False when the key's own supportedOS says macOS lacks it (absent: inherits)."""
    mac = (key.get('supportedOS') or {}).get('macOS')
    if not mac:
        return True
    return str(mac.get('introduced')) != 'n/a' and 'removed' not in mac


def c_str(s):
    out = '"'
    for ch in str(s):
        if ch in '\\"':
            out += '\\' + ch
        elif ch == '\n':
            out += '\\n'
        elif ord(ch) < 0x20:
            out += '\\x%02x' % ord(ch)
        else:
            out += ch
    return out + '"'


def c_num(v):
    if isinstance(v, bool):
        raise SystemExit('boolean in a numeric field')
    if isinstance(v, int):
        return '%d' % v
    return repr(float(v))


class Gen:
    def __init__(self):
        self.tables = []   # (name, [row strings]) in first-seen order
        self.memo = {}     # id(yaml list) -> table name
        self.alive = []    # every list seen: keeps ids unique (a freed list's id is reused)
        self.extra = []    # rangelist arrays

    def table(self, keys):
        """Name of the C table for a YAML key list (emitted once per list object)."""
        if id(keys) in self.memo:
            return self.memo[id(keys)]
        name = 'k_%d' % len(self.tables)
        self.memo[id(keys)] = name
        self.alive.append(keys)
        slot = len(self.tables)
        self.tables.append((name, None))
        rows = [self.row(k) for k in keys if on_macos(k)]
        self.tables[slot] = (name, rows)
        return name

    def rangelist(self, key, values):
        tag = 'rl_%d' % len(self.extra)
        if all(isinstance(v, str) for v in values):
            body = ', '.join(c_str(v) for v in values)
            self.extra.append('static const char *const %s[] = {%s};' % (tag, body))
            return '.rangelist_str = %s' % tag
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            body = ', '.join('%d' % v for v in values)
            self.extra.append('static const int64_t %s[] = {%s};' % (tag, body))
            return '.rangelist_int = %s' % tag
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            body = ', '.join(c_num(v) for v in values)
            self.extra.append('static const double %s[] = {%s};' % (tag, body))
            return '.rangelist_real = %s' % tag
        raise SystemExit('mixed rangelist for key %s' % key['key'])

    def row(self, k):
        t = k.get('type')
        if t not in TYPES:
            raise SystemExit('unknown type %r for key %s' % (t, k.get('key')))
        f = ['.name = %s' % c_str(k['key']), '.type = %s' % TYPES[t]]
        if k.get('presence') == 'required':
            f.append('.required = true')
        rl = k.get('rangelist')
        if rl:
            f.append(self.rangelist(k, rl))
            f.append('.n_rangelist = %d' % len(rl))
        rng = k.get('range') or {}
        if 'min' in rng:
            f += ['.has_min = true', '.min = %s' % c_num(rng['min'])]
        if 'max' in rng:
            f += ['.has_max = true', '.max = %s' % c_num(rng['max'])]
        rep = k.get('repetition') or {}
        if 'min' in rep:
            f.append('.rep_min = %d' % rep['min'])
        if 'max' in rep:
            f.append('.rep_max = %d' % rep['max'])
        if k.get('format'):
            f.append('.format = %s' % c_str(k['format']))
        sub = k.get('subkeys')
        if sub:
            kept = [s for s in sub if on_macos(s)]
            f.append('.sub = %s' % self.table(sub))
            f.append('.n_sub = %d' % len(kept))
        return '{' + ', '.join(f) + '}'


def load(path):
    with open(path, encoding='utf-8') as fh:
        return yaml.safe_load(fh)


def main():
    if len(sys.argv) != 3:
        raise SystemExit('usage: gen-payload-schema.py SPEC_DIR OUTPUT.c')
    spec, out = sys.argv[1], sys.argv[2]
    gen = Gen()
    entries = []
    for kind, sub, field in (('false', 'profiles', 'payloadtype'),
                             ('true', 'commands', 'requesttype')):
        for path in sorted(glob.glob(os.path.join(spec, 'mdm', sub, '*.yaml'))):
            doc = load(path)
            payload = doc.get('payload') or {}
            keys = doc.get('payloadkeys') or []
            kept = [k for k in keys if on_macos(k)]
            tab = gen.table(keys) if keys else 'NULL'
            entries.append('    {.type = %s, .title = %s, .is_command = %s, .keys = %s, '
                           '.n_keys = %d},' % (c_str(payload[field]), c_str(doc.get('title', '')),
                                               kind, tab, len(kept)))
    lines = ['/* Generated by tools/gen-payload-schema.py from spec/apple-device-management.',
             ' * Do not edit: change the generator or the vendored YAML and regenerate. */',
             '#include "actors/payload_schema.h"', '', '#include <stddef.h>', '']
    lines += gen.extra
    lines.append('')
    for name, rows in gen.tables:
        lines.append('static const mdm_pkey_t %s[%d];' % (name, max(len(rows), 1)))
    lines.append('')
    for name, rows in gen.tables:
        lines.append('static const mdm_pkey_t %s[%d] = {' % (name, max(len(rows), 1)))
        lines += ['    %s,' % r for r in rows] or ['    {0},']
        lines.append('};')
    lines.append('')
    lines.append('const mdm_payload_schema_t mdm_payload_schemas[] = {')
    lines += entries
    lines.append('};')
    lines.append('const size_t mdm_payload_schemas_count = %d;' % len(entries))
    text = '\n'.join(lines) + '\n'
    with open(out, 'w', encoding='utf-8') as fh:
        fh.write(text)


if __name__ == '__main__':
    main()
