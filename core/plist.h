/*
 * mdm_plist: safe decoding of untrusted property lists (XML and binary) on libplist, typed
 * getters that tell "missing" from "wrong type", and small builders for replies.
 *
 * Parsing refuses, before libplist sees the bytes, what would make libplist itself unsafe:
 * nesting deep enough to exhaust the stack of its recursive parser and tree walkers, and
 * binary plists whose shared object references would expand into a huge tree (libplist 2.2
 * re-parses a shared object once per reference, so 150 bytes can become millions of nodes,
 * and one shared megabyte of data, referenced a million times, a terabyte).
 * After parsing, the tree is walked once more to enforce the caller's depth limit exactly.
 *
 * Ownership: parsed and built trees are plain libplist nodes (plist_t), freed by their owner
 * with plist_free(). Pointers returned by the getters point into the tree and stay valid
 * until the tree (or that node) is freed or modified.
 *
 * Numbers: libplist 2.2 keeps every <integer> as an unsigned 64-bit value. A negative integer
 * reads back as its two's complement (-1 -> UINT64_MAX), integers too large for 64 bits are
 * clamped to UINT64_MAX, and trailing junk after the digits ("12abc") is ignored. Callers that
 * need small numbers check the range.
 *
 * Duplicate keys in a dictionary: the last one wins (libplist replaces the earlier value).
 * Strings: libplist 2.2 cuts a binary-plist string at an embedded NUL byte; the string
 * getter refuses any string whose length disagrees with its C string length.
 *
 * This module knows nothing about MDM. Threads: reentrant; a tree is used by one thread at
 * a time (libplist nodes are not synchronised).
 */
#ifndef MDM_CORE_PLIST_H
#define MDM_CORE_PLIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <plist/plist.h>

#include "core/buf.h"
#include "core/common.h"

/* Deepest nesting any caller may ask for; keeps libplist's recursion far from the stack end. */
#define MDM_PLIST_DEPTH_LIMIT 512

/* A reasonable depth for protocol messages (MDM bodies nest a handful of levels). */
#define MDM_PLIST_DEPTH_DEFAULT 32

/*
 * A binary plist may reference one object from several places, and libplist copies it once
 * per reference. The expanded tree may cost at most this many units per input byte (plus a
 * small constant), a unit being one node or 8 bytes of string or data; a plist without
 * shared objects costs about one unit per byte.
 */
#define MDM_PLIST_EXPANSION_MAX 8

/**
 * Parses len bytes of an XML or binary property list into *out. XML must start, after an
 * optional UTF-8 byte order mark and white space, with "<?xml", "<!" (DOCTYPE or comment)
 * or "<plist"; binary starts with "bplist00". max_depth (1..MDM_PLIST_DEPTH_LIMIT) is the
 * deepest allowed nesting of containers: a dictionary of scalars has depth 1, a dictionary
 * holding an array of dictionaries depth 3. The root may be of any type.
 *
 * On failure *out is NULL and err (when errlen > 0) holds a short human-readable reason,
 * e.g. "plist is not well-formed", "nesting deeper than 32"; on success err is untouched.
 * The caller frees *out with plist_free(). The caller also bounds len: libplist spends on
 * the order of 100 bytes of memory per element.
 *
 * XML is held to two rules libplist 2.2 does not enforce: every element is closed (a body cut
 * right after "</dict>" is refused), and <data> holds strict base64 (white space allowed).
 *
 * Returns 0; -EBADMSG for empty input, input that is neither XML nor binary plist, and input
 * libplist refuses (malformed, truncated, a reference cycle); MDM_ETOOBIG for nesting deeper
 * than max_depth, a binary plist that expands beyond MDM_PLIST_EXPANSION_MAX units per byte,
 * or len >= 4 GiB; -ENOMEM.
 */
MDM_MUST_CHECK int mdm_plist_parse(const void *data, size_t len, size_t max_depth,
                                   plist_t *out, char *err, size_t errlen);

/**
 * mdm_plist_parse() that also requires the root to be a dictionary. Returns the codes of
 * mdm_plist_parse(), and -EBADMSG ("root is not a dictionary") for any other root type.
 */
MDM_MUST_CHECK int mdm_plist_parse_dict(const void *data, size_t len, size_t max_depth,
                                        plist_t *out, char *err, size_t errlen);

/* ---- typed getters ----------------------------------------------------------------------
 * Each looks up key in dict (which must be a dictionary node) and returns 0 and the value in
 * *out, MDM_ENOTFOUND when the key is absent, or -EINVAL when the value has another type.
 * *out is untouched on failure. Borrowed pointers are valid while the node lives.
 */

/** A string value, NUL-terminated. A string with an embedded NUL byte is -EINVAL. */
MDM_MUST_CHECK int mdm_plist_get_string(plist_t dict, const char *key, const char **out);

/** A <true/> or <false/> value. */
MDM_MUST_CHECK int mdm_plist_get_bool(plist_t dict, const char *key, bool *out);

/** An <integer> value (see the note on numbers above). */
MDM_MUST_CHECK int mdm_plist_get_uint(plist_t dict, const char *key, uint64_t *out);

/** A <data> value: *out points at *len bytes (*out may be NULL when *len is 0). */
MDM_MUST_CHECK int mdm_plist_get_data(plist_t dict, const char *key, const uint8_t **out,
                                      size_t *len);

/** A dictionary value (the node itself, still owned by dict). */
MDM_MUST_CHECK int mdm_plist_get_dict(plist_t dict, const char *key, plist_t *out);

/** An array value (the node itself, still owned by dict). */
MDM_MUST_CHECK int mdm_plist_get_array(plist_t dict, const char *key, plist_t *out);

/* ---- builders ---------------------------------------------------------------------------
 * Each sets key in dict (a dictionary node) to a new value, replacing any earlier value of
 * that key. Returns 0 or -ENOMEM (dict is then unchanged).
 */

MDM_MUST_CHECK int mdm_plist_dict_set_string(plist_t dict, const char *key, const char *val);
MDM_MUST_CHECK int mdm_plist_dict_set_bool(plist_t dict, const char *key, bool val);
MDM_MUST_CHECK int mdm_plist_dict_set_uint(plist_t dict, const char *key, uint64_t val);
MDM_MUST_CHECK int mdm_plist_dict_set_data(plist_t dict, const char *key, const void *data,
                                           size_t len);

/**
 * Sets key in dict to item and hands item over to dict (also when it replaces a value).
 * item must not belong to another tree. Returns 0, or -ENOMEM when item is NULL (so that
 * mdm_plist_dict_set_item(d, k, plist_new_dict()) needs a single check).
 */
MDM_MUST_CHECK int mdm_plist_dict_set_item(plist_t dict, const char *key, plist_t item);

/** Appends a new string to array (an array node). Returns 0 or -ENOMEM. */
MDM_MUST_CHECK int mdm_plist_array_append_string(plist_t array, const char *val);

/**
 * Appends item to array and hands it over. Returns 0, or -ENOMEM when item is NULL.
 */
MDM_MUST_CHECK int mdm_plist_array_append_item(plist_t array, plist_t item);

/* ---- serialisation ---------------------------------------------------------------------- */

/**
 * Appends the XML form of p (with the usual XML declaration and Apple DOCTYPE) to out.
 * Returns 0; -ENOMEM; MDM_ETOOBIG when out would exceed its limit (out is then unchanged).
 */
MDM_MUST_CHECK int mdm_plist_to_xml(plist_t p, mdm_buf_t *out);

/** Appends the binary ("bplist00") form of p to out. Returns the codes of mdm_plist_to_xml(). */
MDM_MUST_CHECK int mdm_plist_to_bin(plist_t p, mdm_buf_t *out);

#endif
