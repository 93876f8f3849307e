#!/usr/bin/python3
"""Checks a configuration profile or an MDM command against Apple's schema YAML.

Usage: validate_profile.py [--spec DIR] profile FILE.mobileconfig
       validate_profile.py [--spec DIR] command FILE.plist
       validate_profile.py [--spec DIR] commands FILE.plist   (an array of commands)

Independent of mdmd's generated C tables: reads spec/apple-device-management/mdm directly,
so a bug in the generator or the C checker does not hide itself. Exits 0 when valid, 1 with
a message naming the key path otherwise. Keys macOS lacks (introduced n/a, or removed) are
treated as unknown.
"""
import datetime
import glob
import os
import plistlib
import re
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_SPEC = os.path.join(HERE, '..', '..', 'spec', 'apple-device-management')


class Invalid(Exception):
    pass


def macos_has(key):
    mac = (key.get('supportedOS') or {}).get('macOS')
    if not mac:
        return True
    return str(mac.get('introduced')) != 'n/a' and 'removed' not in mac


def keys_of(lst):
    return [k for k in (lst or []) if macos_has(k)]


def type_ok(t, v):
    if t == '<string>':
        return isinstance(v, str)
    if t == '<boolean>':
        return isinstance(v, bool)
    if t == '<integer>':
        return isinstance(v, int) and not isinstance(v, bool)
    if t == '<real>':
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if t == '<data>':
        return isinstance(v, bytes)
    if t == '<date>':
        return isinstance(v, datetime.datetime)
    if t == '<dictionary>':
        return isinstance(v, dict)
    if t == '<array>':
        return isinstance(v, list)
    return t == '<any>'


def pick_form(forms, item):
    """Array item forms: the one whose 'Item' rangelist names the item's Item."""
    if len(forms) > 1 and isinstance(item, dict) and 'Item' in item:
        for f in forms:
            for k in f.get('subkeys') or []:
                if k['key'] == 'Item' and k.get('rangelist') == [item['Item']]:
                    return f
    return forms[0]


def check_value(key, v, path):
    t = key.get('type')
    if not type_ok(t, v):
        raise Invalid('%s: expected %s, got %s' % (path, t, type(v).__name__))
    rl = key.get('rangelist')
    if rl is not None and t != '<array>' and v not in rl:
        raise Invalid('%s: %r not in %r' % (path, v, rl))
    rng = key.get('range') or {}
    if 'min' in rng and v < rng['min']:
        raise Invalid('%s: %r below %r' % (path, v, rng['min']))
    if 'max' in rng and v > rng['max']:
        raise Invalid('%s: %r above %r' % (path, v, rng['max']))
    if key.get('format') and isinstance(v, str) and not re.search(key['format'], v):
        raise Invalid('%s: %r does not match %s' % (path, v, key['format']))
    sub = keys_of(key.get('subkeys'))
    if t == '<dictionary>' and sub:
        check_dict(sub, v, path)
    if t == '<array>' and sub:
        rep = sub[0].get('repetition') or {}
        if 'min' in rep and len(v) < rep['min'] or 'max' in rep and len(v) > rep['max']:
            raise Invalid('%s: %d items, repetition %r' % (path, len(v), rep))
        for i, item in enumerate(v):
            check_value(pick_form(sub, item), item, '%s[%d]' % (path, i))


def check_dict(keys, d, path):
    by_name = {k['key']: k for k in keys}
    for name, v in d.items():
        k = by_name.get(name) or by_name.get('ANY')
        if k is None:
            raise Invalid('%s.%s: unknown key' % (path, name))
        check_value(k, v, '%s.%s' % (path, name))
    for k in keys:
        if k.get('presence') == 'required' and k['key'] != 'ANY' and k['key'] not in d:
            raise Invalid('%s.%s: required key missing' % (path, k['key']))


def load_dir(spec, sub, field):
    out = {}
    for f in sorted(glob.glob(os.path.join(spec, 'mdm', sub, '*.yaml'))):
        with open(f, encoding='utf-8') as fh:
            doc = yaml.safe_load(fh)
        out[doc['payload'][field]] = doc
    return out


def check_profile(spec, data):
    profiles = load_dir(spec, 'profiles', 'payloadtype')
    top = plistlib.loads(data)
    if not isinstance(top, dict) or top.get('PayloadType') != 'Configuration':
        raise Invalid('PayloadType: not a Configuration profile')
    check_dict(keys_of(profiles['TopLevel']['payloadkeys']), top, 'profile')
    common = keys_of(profiles['CommonPayloadKeys']['payloadkeys'])
    for i, p in enumerate(top.get('PayloadContent', [])):
        path = 'PayloadContent[%d]' % i
        doc = profiles.get(p.get('PayloadType'))
        if doc is None:
            raise Invalid('%s.PayloadType: unknown payload type %r' % (path, p.get('PayloadType')))
        mac = (doc['payload'].get('supportedOS') or {}).get('macOS') or {}
        if str(mac.get('introduced')) == 'n/a':
            raise Invalid('%s.PayloadType: %s is not available on macOS' % (path, p['PayloadType']))
        check_dict(keys_of(doc.get('payloadkeys')) + common, p, path)


def check_command(spec, data):
    commands = load_dir(spec, 'commands', 'requesttype')
    cmd = plistlib.loads(data)
    if isinstance(cmd, dict) and isinstance(cmd.get('Command'), dict):
        cmd = cmd['Command']
    if not isinstance(cmd, dict) or not isinstance(cmd.get('RequestType'), str):
        raise Invalid('RequestType: missing')
    doc = commands.get(cmd['RequestType'])
    if doc is None:
        raise Invalid('RequestType: unknown command %r' % cmd['RequestType'])
    params = {k: v for k, v in cmd.items() if k != 'RequestType'}
    check_dict(keys_of(doc.get('payloadkeys')), params, cmd['RequestType'])


def check_commands(spec, data):
    """A plist array of commands (the preview of a command policy): each one checked."""
    cmds = plistlib.loads(data)
    if not isinstance(cmds, list) or not cmds:
        raise Invalid('expected a non-empty array of commands')
    for i, cmd in enumerate(cmds):
        try:
            check_command(spec, plistlib.dumps(cmd))
        except Invalid as e:
            raise Invalid('[%d] %s' % (i, e))


CHECKS = {'profile': check_profile, 'command': check_command, 'commands': check_commands}


def main(argv):
    spec = DEFAULT_SPEC
    if len(argv) > 2 and argv[1] == '--spec':
        spec = argv[2]
        argv = argv[:1] + argv[3:]
    if len(argv) != 3 or argv[1] not in CHECKS:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[2], 'rb') as fh:
        data = fh.read()
    try:
        CHECKS[argv[1]](spec, data)
    except Invalid as e:
        print('invalid: %s' % e, file=sys.stderr)
        return 1
    except Exception as e:  # not a plist, wrong shapes
        print('invalid: %s: %s' % (type(e).__name__, e), file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
