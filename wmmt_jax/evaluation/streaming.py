"""Streaming readers for challenge predictions and metadata JSON.

A predictions file of 1.1 million videos x 100 proposals is 3-4 GB of text;
`json.load` would build 110 million Python lists and need tens of GB. These
readers hold one chunk of text at a time and turn it straight into flat
float32 arrays (`ragged.RaggedRows`), so memory is the arrays (1.3 GB) plus a
chunk.

Predictions, `{"file": [[score, start, end], ...], ...}`, are read by a numpy
tokenizer: byte classes, quote pairing, a bracket-depth grammar check over
the token stream, and a vectorised number parser (a JSON-number state
machine run over all tokens at once, two characters per step). Anything it
does not take (escaped quotes in names, NaN, a row of 2 numbers, bad syntax)
sends the chunk to a slow path that parses entry by entry with the `json`
module and either reads it or raises an error naming the file and row. The
numbers of one chunk are parsed on a second thread while the next chunk is
tokenized; the result does not depend on it.

Numbers become float32 as in the official evaluator: the decimal rounded to
the nearest float64, then to float32 (`as_f64() as f32`). The vectorised
parser is exact where the float64 arithmetic is (mantissa < 2^53, power of
ten <= 22) and checks the other cases against the float32 rounding
midpoints, parsing the doubtful ones with `float`.

Metadata, a JSON list of objects, is read one object at a time with
`json.JSONDecoder.raw_decode`, keeping only the file name and the segments.
"""

import array
import codecs
import collections
from concurrent import futures
import functools
import json
import os
import re

import numpy as np

from wmmt_jax.evaluation import ragged

CHUNK_BYTES = 1 << 22

# Byte classes of the tokenizer. String contents are set to _WS once quotes
# are paired; _NUM_E ('e', 'E') is a number byte kept apart to spot exponents.
(_WS, _NUM, _NUM_E, _LBRACKET, _RBRACKET, _COMMA, _COLON, _LBRACE, _RBRACE,
 _QUOTE, _OTHER) = range(11)
_N_CLASSES = 11
_CLASS = np.full(256, _OTHER, np.uint8)
for _c in b' \t\r\n':
  _CLASS[_c] = _WS
for _c in b'0123456789+-.':
  _CLASS[_c] = _NUM
_CLASS[ord('e')] = _CLASS[ord('E')] = _NUM_E
for _c, _k in zip(b'[],:{}"', (_LBRACKET, _RBRACKET, _COMMA, _COLON, _LBRACE,
                               _RBRACE, _QUOTE)):
  _CLASS[_c] = _k
_CLASS_TABLE = _CLASS.tobytes()  # for bytes.translate, faster than a take.
_DEPTH_STEP = np.zeros(_N_CLASSES, np.int32)
_DEPTH_STEP[[_LBRACKET, _LBRACE]] = 1
_DEPTH_STEP[[_RBRACKET, _RBRACE]] = -1

# Token kinds once the bracket depth is known: B is the virtual token before
# the first entry (the opening brace), S a file name, L/l a video's list
# open/close, R/r a row open/close, N a number, C1/C2/C3 commas between
# entries/rows/numbers, E the closing brace, X anything out of place.
(_B, _S, _COLON_T, _L, _R, _N, _C3, _RCLOSE, _C2, _LCLOSE, _C1, _E,
 _X) = range(13)
_N_KINDS = 13
_MAX_DEPTH = 4
_KIND = np.full((_N_CLASSES, _MAX_DEPTH + 1), _X, np.intp)
_KIND[_QUOTE, 1] = _S
_KIND[_COLON, 1] = _COLON_T
_KIND[_LBRACKET, 1], _KIND[_LBRACKET, 2] = _L, _R
_KIND[_NUM, 3] = _KIND[_NUM_E, 3] = _N
_KIND[_COMMA, 1], _KIND[_COMMA, 2], _KIND[_COMMA, 3] = _C1, _C2, _C3
_KIND[_RBRACKET, 3], _KIND[_RBRACKET, 2] = _RCLOSE, _LCLOSE
_KIND[_RBRACE, 1] = _E
_KIND = _KIND.reshape(-1)
# Which kind may follow which: the grammar of the challenge format. With it,
# a row is R N C3 N C3 N r exactly when its r is 6 tokens after its R.
_FOLLOWS = np.zeros((_N_KINDS, _N_KINDS), bool)
for _a, _bs in {_B: (_S, _E), _S: (_COLON_T,), _COLON_T: (_L,),
                _L: (_R, _LCLOSE), _R: (_N,), _N: (_C3, _RCLOSE), _C3: (_N,),
                _RCLOSE: (_C2, _LCLOSE), _C2: (_R,), _LCLOSE: (_C1, _E),
                _C1: (_S,)}.items():
  _FOLLOWS[_a, list(_bs)] = True
_FOLLOWS = _FOLLOWS.reshape(-1)

# JSON-number state machine, -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?,
# over character classes; a byte that cannot be in a number ends the token.
_CC_END, _CC_ZERO, _CC_DIGIT, _CC_MINUS, _CC_PLUS, _CC_DOT, _CC_E = range(7)
_NUM_CLASS = np.full(256, _CC_END, np.uint8)
_NUM_CLASS[ord('0')] = _CC_ZERO
_NUM_CLASS[ord('1'):ord('9') + 1] = _CC_DIGIT
_NUM_CLASS[ord('-')], _NUM_CLASS[ord('+')] = _CC_MINUS, _CC_PLUS
_NUM_CLASS[ord('.')] = _CC_DOT
_NUM_CLASS[ord('e')] = _NUM_CLASS[ord('E')] = _CC_E
(_ST_START, _ST_MINUS, _ST_ZERO, _ST_INT, _ST_DOT, _ST_FRAC, _ST_EMARK,
 _ST_ESIGN, _ST_EXP, _ST_DONE, _ST_BAD) = range(11)
_N_STATES = 11
_MOVES = {
    _ST_START: {_CC_ZERO: _ST_ZERO, _CC_DIGIT: _ST_INT, _CC_MINUS: _ST_MINUS},
    _ST_MINUS: {_CC_ZERO: _ST_ZERO, _CC_DIGIT: _ST_INT},
    _ST_ZERO: {_CC_DOT: _ST_DOT, _CC_E: _ST_EMARK, _CC_END: _ST_DONE},
    _ST_INT: {_CC_ZERO: _ST_INT, _CC_DIGIT: _ST_INT, _CC_DOT: _ST_DOT,
              _CC_E: _ST_EMARK, _CC_END: _ST_DONE},
    _ST_DOT: {_CC_ZERO: _ST_FRAC, _CC_DIGIT: _ST_FRAC},
    _ST_FRAC: {_CC_ZERO: _ST_FRAC, _CC_DIGIT: _ST_FRAC, _CC_E: _ST_EMARK,
               _CC_END: _ST_DONE},
    _ST_EMARK: {_CC_PLUS: _ST_ESIGN, _CC_MINUS: _ST_ESIGN,
                _CC_ZERO: _ST_EXP, _CC_DIGIT: _ST_EXP},
    _ST_ESIGN: {_CC_ZERO: _ST_EXP, _CC_DIGIT: _ST_EXP},
    _ST_EXP: {_CC_ZERO: _ST_EXP, _CC_DIGIT: _ST_EXP, _CC_END: _ST_DONE},
}
# Exact float64 powers of ten.
_POW10 = 10.0 ** np.arange(23)
_MAX_DIGITS = 18  # int64 mantissa without overflow.
_MAX_TOKEN = 40  # Longer tokens go through `float`.
_JSON_NUMBER = re.compile(rb'-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?')
_NUMBER_RUN = re.compile(rb'[-+.eE0-9]*')

# Types of a segment and of its two numbers (numpy ones from in-memory use;
# bool is excluded on purpose).
_SEQUENCES = frozenset((list, tuple, np.ndarray))
_NUMBERS = frozenset((int, float, np.float16, np.float32, np.float64,
                      np.int16, np.int32, np.int64))
_DECODER = json.JSONDecoder()
_WHITESPACE = re.compile(r'[ \t\n\r]*')


@functools.cache
def _pair_tables():
  """Number-parser tables for two characters per step.

  Indexed by `state << 16 | second_byte << 8 | first_byte` (a little-endian
  uint16 of the two bytes): the new state, and how the mantissa
  (`m * mul + add`), the count of mantissa and fraction digits and the
  exponent change. DONE and BAD absorb, so a step may run past a token's end.
  Built on first use (~11 MB).
  """
  one = np.full((_N_STATES, 256), _ST_BAD, np.intp)
  for s, moves in _MOVES.items():
    for cc, t in moves.items():
      one[s, _NUM_CLASS == cc] = t
  one[_ST_DONE] = _ST_DONE
  digit = np.zeros(256, np.int64)
  digit[ord('0'):ord('9') + 1] = np.arange(10)
  mant = np.isin(one, (_ST_ZERO, _ST_INT, _ST_FRAC))
  one_mul = np.where(mant, 10, 1)
  one_add = np.where(mant, digit, 0)
  one_frac = (one == _ST_FRAC).astype(np.int64)
  one_emul = np.where(one == _ST_EXP, 10, 1)
  one_eadd = np.where(one == _ST_EXP, digit, 0)
  one_eminus = (one == _ST_ESIGN) & (np.arange(256) == ord('-'))
  # [state, second, first]: first byte from `state`, second from `mid`.
  s = np.arange(_N_STATES)[:, None, None]
  c2 = np.arange(256)[None, :, None]
  c1 = np.arange(256)[None, None, :]
  mid = one[s, c1]
  tables = dict(
      state=one[mid, c2] << 16,
      mul=(one_mul[s, c1] * one_mul[mid, c2]).astype(np.int16),
      add=(one_add[s, c1] * one_mul[mid, c2] + one_add[mid, c2]).astype(
          np.int8),
      digits=(mant[s, c1].astype(np.int8) + mant[mid, c2]).astype(np.int8),
      frac=(one_frac[s, c1] + one_frac[mid, c2]).astype(np.int8),
      emul=(one_emul[s, c1] * one_emul[mid, c2]).astype(np.int16),
      eadd=(one_eadd[s, c1] * one_emul[mid, c2] + one_eadd[mid, c2]).astype(
          np.int8),
      eminus=one_eminus[s, c1] | one_eminus[mid, c2])
  return {k: v.reshape(-1) for k, v in tables.items()}


def _float32_is_doubtful(v):
  """Where float64 `v`, a few ulps off the decimal, may round differently.

  True when `v` lies within 8 float64 ulps of a float32 rounding midpoint
  (then the exact decimal and `v` may fall on different sides of it).
  """
  with np.errstate(over='ignore'):  # Out of float32 range: inf, checked later.
    f = v.astype(np.float32)
  toward = np.nextafter(f, np.where(v > f, np.float32(np.inf),
                                    np.float32(-np.inf)))
  midpoint = (f.astype(np.float64) + toward.astype(np.float64)) / 2
  return np.abs(v - midpoint) <= 8 * np.spacing(np.abs(v))


def _token_at(buf, start):
  """The maximal run of number bytes at `start`, as bytes."""
  return _NUMBER_RUN.match(memoryview(buf), int(start)).group()


def parse_numbers(buf, starts, limits, exponents=True):
  """Parses JSON number tokens of `buf` to float64, vectorised.

  The same values as `float(token)` where that matters for float32 (see the
  module docstring); tokens outside the fast cases are parsed by `float`.
  The state machine runs two characters per step over all tokens, longest
  first, so that step j touches only the tokens that reach that far.

  Args:
    buf: `[B]` uint8 text.
    starts: `[T]` int64 token starts. Token i is the run of number bytes
      (`-+.eE0-9`) at `starts[i]`.
    limits: `[T]` int64, at or after the end of token i, such that the bytes
      from its end to `limits[i]` cannot be in a number (for instance, the
      start of the next token).
    exponents: False when no token has an `e` or `E` (skips that work).

  Returns:
    `[T]` float64 values, or None when a token is not a JSON number.
  """
  value = np.zeros(starts.size, np.float64)
  lengths = limits - starts
  slow = list(np.flatnonzero(lengths > _MAX_TOKEN))
  fast = np.flatnonzero(lengths <= _MAX_TOKEN)
  if fast.size:
    order = fast[np.argsort(-lengths[fast].astype(np.int16), kind='stable')]
    parsed = _parse_sorted(buf, starts[order], lengths[order], exponents)
    if parsed is None:
      return None
    value[order], doubtful = parsed
    slow.extend(order[doubtful])
  for i in slow:
    token = _token_at(buf, starts[i])
    if not _JSON_NUMBER.fullmatch(token):
      return None
    value[i] = float(token)
  return value


def _parse_sorted(buf, first, lengths, exponents):
  """`parse_numbers` of tokens sorted by decreasing length bound.

  Returns:
    `(values, doubtful)`: float64 values, and the indices of the tokens that
    `float` must parse (see `parse_numbers`); or None for a token that is not
    a JSON number.
  """
  tables = _pair_tables()
  n = first.size
  width = int(lengths[0]) + 1  # Every token also sees the byte after it.
  padded = np.zeros(buf.size + width + 2, np.uint8)
  padded[:buf.size] = buf
  # Little-endian pairs of bytes: pairs[p] = buf[p] | buf[p + 1] << 8.
  pairs = padded[:-1].astype(np.uint16)
  pairs |= padded[1:].astype(np.uint16) << 8
  # reach[j]: tokens that still have a byte at position j, the end
  # included: those with length >= j, a prefix.
  reach = np.cumsum(np.bincount(lengths, minlength=width + 1)[::-1])[::-1]
  # The state is kept shifted (`state << 16`, as the table stores it) and
  # intp: `take` with an intp index, mode 'clip' and `out` is the fastest.
  state = np.zeros(n, np.intp)
  step = np.empty(n, np.intp)
  pos = first.copy()
  mantissa = np.zeros(n, np.int64)
  n_frac = np.zeros(n, np.int8)
  n_digits = np.zeros(n, np.int8) if width > _MAX_DIGITS else None
  exponent = np.zeros(n, np.int64) if exponents else None
  exp_minus = np.zeros(n, bool) if exponents else None
  for j in range(0, width, 2):
    k = reach[j]
    s = step[:k]
    np.bitwise_or(state[:k], pairs.take(pos[:k], mode='clip'), out=s)
    pos[:k] += 2
    tables['state'].take(s, out=state[:k], mode='clip')
    m = mantissa[:k]
    m *= tables['mul'].take(s, mode='clip')
    m += tables['add'].take(s, mode='clip')
    n_frac[:k] += tables['frac'].take(s, mode='clip')
    if n_digits is not None:
      n_digits[:k] += tables['digits'].take(s, mode='clip')
    if exponent is not None:
      e = exponent[:k]
      e *= tables['emul'].take(s, mode='clip')
      e += tables['eadd'].take(s, mode='clip')
      np.minimum(e, 10**6, out=e)  # Far out of range; `float` decides.
      exp_minus[:k] |= tables['eminus'].take(s, mode='clip')
  state >>= 16
  if (state != _ST_DONE).any():
    return None
  power = -n_frac.astype(np.int64)
  if exponent is not None:
    power += np.where(exp_minus, -exponent, exponent)
  in_range = np.abs(power) <= 22
  scale = _POW10.take(np.minimum(np.abs(power), 22))
  v = mantissa.astype(np.float64)
  v = np.where(power >= 0, v * scale, v / scale)
  v = np.where(padded.take(first) == ord('-'), -v, v)
  # One rounding (mantissa < 2^53, an exact power of ten) is the float64 of
  # the decimal. Two roundings can only matter next to a float32 midpoint;
  # those tokens, and the ones out of range, go through `float`.
  slow = ~in_range
  if n_digits is not None:
    slow |= n_digits > _MAX_DIGITS
  approx = ~slow & (mantissa >= 2**53)
  if approx.any():
    slow[approx] = _float32_is_doubtful(v[approx])
  return v, np.flatnonzero(slow)


def _last_index(mask_of, n):
  """Index of the last token for which `mask_of(lo, hi)` is True, or -1.

  Searches back from the end in growing windows: the last entry of a chunk
  is near its end, so this usually reads a few thousand tokens.
  """
  hi, size = n, 4096
  while hi > 0:
    lo = max(hi - size, 0)
    found = np.flatnonzero(mask_of(lo, hi))
    if found.size:
      return lo + int(found[-1])
    hi, size = lo, 4 * size
  return -1


def _name(raw):
  """A file name from the bytes between its quotes, escapes decoded."""
  if b'\\' in raw:
    return json.loads(b'"' + raw + b'"')
  return raw.decode('utf-8')


def _fast_structure(data, first, final):
  """Tokenizes and checks the complete predictions entries at `data`'s start.

  `data` starts inside the top-level object: after its `{` (`first`) or after
  a complete entry.

  Args:
    data: bytes.
    first: no entry has been read yet.
    final: `data` runs to the end of the file.

  Returns:
    `(consumed_bytes, files, counts, numbers, done)`, with
    `consumed_bytes == 0` when `data` holds no complete entry (read more),
    `numbers` the arguments of `parse_numbers` for the rows' numbers, and
    `done` when the closing brace was read; or None when the slow path must
    read this text (unusual JSON, or an error to report).
  """
  need_more = (0, [], np.zeros(0, np.int64), None, False)
  # Backslashes can only be escapes in names; an escaped quote would break
  # the quote pairing (and `\\"` is rare enough to leave to the slow path).
  if not data or data.find(b'\\"') >= 0:
    return None
  buf = np.frombuffer(data, np.uint8)
  quotes = np.flatnonzero(buf == ord('"'))
  if quotes.size % 2:
    # An unterminated string: the text ends inside a name; look before it.
    if final:
      return None
    buf, quotes = buf[:quotes[-1]], quotes[:-1]
  cls = np.frombuffer(bytearray(buf.tobytes().translate(_CLASS_TABLE)),
                      np.uint8)
  opens, closes = quotes[0::2], quotes[1::2]
  # Blank the names after their opening quote: only the quote is a token.
  lengths = closes - opens
  total = int(lengths.sum())
  if total:
    inside = np.arange(total, dtype=np.int64)
    inside += np.repeat(opens + 1 - (np.cumsum(lengths) - lengths), lengths)
    if (buf.take(inside) < 0x20).any():
      return None  # A control character in a name: invalid JSON.
    cls[inside] = _WS

  # A token is a non-blank byte, except the second and later bytes of a
  # number.
  num = (cls == _NUM) | (cls == _NUM_E)
  significant = cls != _WS
  significant[1:] &= ~(num[1:] & num[:-1])
  token_pos = np.flatnonzero(significant)
  if not token_pos.size:
    return None if final else need_more
  token = cls.take(token_pos).astype(np.intp)

  # Depth before each token; the text starts at depth 1, inside the object.
  step = _DEPTH_STEP.take(token)
  depth = np.cumsum(step)
  depth -= step
  depth += 1
  np.clip(depth, 0, _MAX_DEPTH, out=depth)
  token *= _MAX_DEPTH + 1
  token += depth
  kind = _KIND.take(token)
  del token, step, depth
  follows = kind * _N_KINDS
  follows[1:] = follows[:-1] + kind[1:]
  follows[0] = (_B if first else _LCLOSE) * _N_KINDS + kind[0]
  if not _FOLLOWS.take(follows).all():
    return None
  del follows

  # Cut after the last complete entry (or the closing brace).
  last = _last_index(
      lambda lo, hi: (kind[lo:hi] == _LCLOSE) | (kind[lo:hi] == _E),
      kind.size)
  if last < 0:
    return None if final else need_more
  done = kind[last] == _E
  if final and not done:
    return None  # Truncated file: the slow path words the error.
  kind = kind[:last + 1]
  row_close = np.flatnonzero(kind == _RCLOSE)
  if row_close.size and (row_close[0] < 6 or
                         not (kind.take(row_close - 6) == _R).all()):
    return None  # A row without exactly 3 numbers.

  # Entries: names are the quotes before the cut; rows are counted between
  # consecutive names.
  cut = int(token_pos[last]) + 1
  names = opens[opens < cut]
  try:
    files = [_name(data[a + 1:b])
             for a, b in zip(names.tolist(), closes[:names.size].tolist())]
  except ValueError:  # Not UTF-8, or a bad escape: the slow path words it.
    return None
  close_pos = token_pos.take(row_close)
  bounds = np.searchsorted(close_pos, np.r_[names, cut])
  counts = np.diff(bounds).astype(np.int64)
  # The numbers of the row closed by token r are tokens r - 5, r - 3, r - 1.
  number = (row_close[:, None] + np.array([-5, -3, -1])).reshape(-1)
  numbers = (buf, token_pos.take(number), token_pos.take(number + 1),
             bool((cls == _NUM_E).any()))
  return cut, files, counts, numbers, bool(done)


def _rows_of_numbers(numbers):
  """`[R, 3]` float32 rows from `_fast_structure`'s numbers, or None."""
  values = parse_numbers(*numbers)
  if values is None:
    return None
  return values.astype(np.float32).reshape(-1, 3)


def _fast_entries(data, first, final):
  """Reads the complete predictions entries at the start of `data`, vectorised.

  Returns:
    `_fast_structure`'s result with `[R, 3]` float32 rows for its numbers, or
    None when the slow path must read this text.
  """
  got = _fast_structure(data, first, final)
  if got is None:
    return None
  consumed, files, counts, numbers, done = got
  rows = _rows_of_numbers(numbers) if numbers else np.zeros((0, 3),
                                                             np.float32)
  if rows is None:
    return None
  return consumed, files, counts, rows, done


def _skip_ws(text, pos):
  """Position of the first non-whitespace character at or after `pos`."""
  return _WHITESPACE.match(text, pos).end()


def _rows_of_value(value, file, what):
  """A decoded predictions value as `[K, 3]` float32, or InputError."""
  if not isinstance(value, list):
    raise ragged.InputError(
        f'{what}: {file!r} must be a list of [score, start, end] rows, got '
        f'{type(value).__name__} {value!r:.80}.')
  for r, row in enumerate(value):
    if (not isinstance(row, list) or len(row) != 3 or
        not all(type(x) in (int, float) for x in row)):
      raise ragged.InputError(ragged.row_message(
          what, file, r, row, 'is not 3 numbers', is_proposal=True))
  return np.array(value, np.float64).reshape(-1, 3).astype(np.float32)


class _Incomplete(Exception):
  """The text ends inside an entry: read more."""


def _decode_at(decode, text, pos, final, what, offset_of):
  """`decode(text, pos)`, with an error or `_Incomplete` on a failure.

  A failure near the end of non-final text may be text cut in the middle;
  one further back, or in final text, is a syntax error.
  """
  try:
    return decode(text, pos)
  except json.JSONDecodeError as e:
    if not final and (e.pos >= len(text) - 4096 or
                      e.msg.startswith('Unterminated string')):
      raise _Incomplete() from None
    raise ragged.InputError(
        f'{what}: invalid JSON at byte {offset_of(e.pos)}: {e.msg}.') from None


def _slow_entries(data, first, final, what, offset):
  """Reads the complete predictions entries of `data` with the json module.

  The same contract as `_fast_entries`, for any valid JSON, and the one place
  that words syntax and row errors.

  Args:
    data: bytes, starting as for `_fast_entries`.
    first: no entry has been read yet.
    final: `data` runs to the end of the file.
    what: the file name, for messages.
    offset: file offset of `data[0]`, for messages.
  """
  try:
    text, _ = codecs.utf_8_decode(data, 'strict', final)
  except UnicodeDecodeError as e:
    raise ragged.InputError(f'{what}: not UTF-8 at byte {offset + e.start}.'
                            ) from None

  def offset_of(pos):
    """File offset of character `pos` of `text`."""
    return offset + len(text[:pos].encode('utf-8'))

  def fail(pos, expected):
    """Raises a syntax error at character `pos`."""
    got = text[pos:pos + 20] or 'the end of the file'
    raise ragged.InputError(f'{what}: invalid JSON at byte {offset_of(pos)}: '
                            f'expected {expected}, got {got!r}.')

  files, arrays, consumed, done = [], [], 0, False
  pos = 0
  try:
    while True:
      pos = _skip_ws(text, pos)
      if pos >= len(text):
        raise _Incomplete()
      if text[pos] == '}':
        consumed, done = pos + 1, True
        break
      if not first or files:
        if text[pos] != ',':
          fail(pos, "',' or '}'")
        pos = _skip_ws(text, pos + 1)
        if pos >= len(text):
          raise _Incomplete()
      if text[pos] != '"':
        fail(pos, 'a file name')
      file, pos = _decode_at(json.decoder.scanstring, text, pos + 1, final,
                             what, offset_of)
      pos = _skip_ws(text, pos)
      if pos >= len(text):
        raise _Incomplete()
      if text[pos] != ':':
        fail(pos, "':'")
      pos = _skip_ws(text, pos + 1)
      if pos >= len(text):
        raise _Incomplete()
      value, pos = _decode_at(_DECODER.raw_decode, text, pos, final, what,
                              offset_of)
      files.append(file)
      arrays.append(_rows_of_value(value, file, what))
      consumed = pos
  except _Incomplete:
    if final:
      raise ragged.InputError(
          f'{what}: the file ends inside the JSON object (truncated?).'
          ) from None
  counts = np.array([len(a) for a in arrays], np.int64)
  rows = (np.concatenate(arrays) if arrays
          else np.zeros((0, 3), np.float32))
  return len(text[:consumed].encode('utf-8')), files, counts, rows, done


class _Chunks:
  """A file read in chunks: `data` is the unread text, from file `offset`."""

  def __init__(self, f, chunk_bytes):
    self._f = f
    self._chunk = chunk_bytes
    self.data = b''
    self.offset = 0
    self.eof = False

  def fill(self, grow=False):
    """Reads until `data` has a chunk (or, with `grow`, doubles it)."""
    want = 2 * len(self.data) if grow else self._chunk
    want = max(want, self._chunk)
    parts = [self.data]
    size = len(self.data)
    while size < want and not self.eof:
      more = self._f.read(want - size)
      if not more:
        self.eof = True
      parts.append(more)
      size += len(more)
    self.data = b''.join(parts)

  def consume(self, n):
    """Drops the first `n` bytes of `data`."""
    self.data = self.data[n:]
    self.offset += n

  def skip_ws(self):
    """Drops leading whitespace (and a UTF-8 byte order mark at the start)."""
    while True:
      while len(self.data) < len(codecs.BOM_UTF8) and not self.eof:
        self.fill(grow=True)
      if self.offset == 0 and self.data.startswith(codecs.BOM_UTF8):
        self.consume(len(codecs.BOM_UTF8))
      stripped = self.data.lstrip(b' \t\r\n')
      self.consume(len(self.data) - len(stripped))
      if self.data or self.eof:
        return


def _expect(chunks, char, what, expected):
  """Consumes `char` after whitespace, or raises naming what was expected."""
  chunks.skip_ws()
  if chunks.data[:1] != char:
    got = chunks.data[:20].decode('utf-8', 'replace') or 'the end of the file'
    raise ragged.InputError(f'{what}: expected {expected}, got {got!r}.')
  chunks.consume(1)


def _expect_end(chunks, what):
  """Raises unless only whitespace is left in the file."""
  chunks.skip_ws()
  if chunks.data:
    raise ragged.InputError(
        f'{what}: extra data after the JSON value at byte {chunks.offset}.')


def read_predictions(path, *, chunk_bytes=CHUNK_BYTES):
  """Reads a challenge predictions file `{file: [[score, start, end], ...]}`.

  Streams: memory is the result plus a few chunks. Every row is checked.

  Args:
    path: the JSON file.
    chunk_bytes: text read at a time (tests use tiny chunks).

  Returns:
    A `ragged.RaggedRows` of `[score, start, end]` float32 rows, files in the
    order of the file (repeated names kept; the last one counts).

  Raises:
    ragged.InputError: invalid JSON or a malformed row (not 3 numbers, NaN or
      infinite, end < start), naming the file and the row.
    OSError: the file cannot be read.
  """
  what = os.fspath(path)
  files, counts, rows = [], [], []

  def keep(new_files, new_counts, new_rows):
    """Checks and appends the entries of one window."""
    offsets = np.zeros(len(new_files) + 1, np.int64)
    np.cumsum(new_counts, out=offsets[1:])
    ragged.check_rows(ragged.RaggedRows(new_files, new_rows, offsets), what,
                      is_proposal=True)
    files.extend(new_files)
    counts.append(new_counts)
    rows.append(new_rows)

  def finish(window):
    """Waits for a window's numbers and keeps its entries, in file order."""
    future, data, was_first, offset, new_files, new_counts = window
    new_rows = future.result()
    if new_rows is None:
      # Numbers the fast parser does not take: the slow path reads (or
      # rejects, naming the row) this window's complete entries.
      consumed, new_files, new_counts, new_rows, _ = _slow_entries(
          data, was_first, False, what, offset)
      if consumed < len(data):
        _slow_entries(data[consumed:], was_first and not consumed, True,
                      what, offset + consumed)
    keep(new_files, new_counts, new_rows)

  # The numbers of one window are parsed on a second thread while the next
  # window is tokenized (numpy releases the GIL); results keep file order.
  with open(path, 'rb') as f, futures.ThreadPoolExecutor(1) as pool:
    chunks = _Chunks(f, chunk_bytes)
    _expect(chunks, b'{', what,
            'a JSON object {"file": [[score, start, end], ...], ...}')
    first, grow = True, False
    pending = collections.deque()
    while True:
      chunks.fill(grow)
      got = _fast_structure(chunks.data, first, chunks.eof)
      if got is None:
        while pending:
          finish(pending.popleft())
        consumed, new_files, new_counts, new_rows, done = _slow_entries(
            chunks.data, first, chunks.eof, what, chunks.offset)
        if new_files:
          keep(new_files, new_counts, new_rows)
      else:
        consumed, new_files, new_counts, numbers, done = got
        if new_files:
          future = pool.submit(_rows_of_numbers, numbers) if numbers else (
              _done_future(np.zeros((0, 3), np.float32)))
          pending.append((future, chunks.data[:consumed], first,
                          chunks.offset, new_files, new_counts))
          if len(pending) > 1:
            finish(pending.popleft())
      first = first and not new_files
      chunks.consume(consumed)
      if done:
        break
      # No complete entry in the buffer: one entry is larger than a chunk.
      grow = consumed == 0
    while pending:
      finish(pending.popleft())
    _expect_end(chunks, what)
  offsets = np.zeros(len(files) + 1, np.int64)
  if counts:
    np.cumsum(np.concatenate(counts), out=offsets[1:])
  rows = np.concatenate(rows) if rows else np.zeros((0, 3), np.float32)
  return ragged.RaggedRows(files, rows, offsets)


def _done_future(value):
  """A future that already holds `value`."""
  future = futures.Future()
  future.set_result(value)
  return future


class _SegmentCollector:
  """Keeps the file name and segments of metadata entries, one at a time."""

  def __init__(self, file_key, segments_keys, what):
    if isinstance(segments_keys, str):
      segments_keys = (segments_keys,)
    self._file_key = file_key
    self._keys = tuple(segments_keys)
    self._key = self._keys[0] if len(self._keys) == 1 else None
    self._what = what
    self.files = []
    self._counts = array.array('q')
    self._values = array.array('d')

  def add(self, entry, index):
    """Adds metadata entry number `index` (a decoded JSON object)."""
    if type(entry) is not dict:  # pylint: disable=unidiomatic-typecheck
      raise ragged.InputError(
          f'{self._what}: entry {index} must be an object with '
          f'{self._file_key!r} and the segments, got {type(entry).__name__}.')
    file = entry.get(self._file_key)
    if type(file) is not str:  # pylint: disable=unidiomatic-typecheck
      raise ragged.InputError(
          f'{self._what}: entry {index} has no string {self._file_key!r} '
          f'field (fields: {", ".join(map(str, entry))}); set the file key.')
    if self._key is None:
      # Auto: the first candidate the first entry has, for all entries.
      self._key = next((k for k in self._keys if k in entry), None)
      if self._key is None:
        raise ragged.InputError(
            f'{self._what}: entry {index} ({file!r}) has none of the segment '
            f'fields {list(self._keys)} (fields: {", ".join(map(str, entry))})'
            '; set the segments key.')
    segments = entry.get(self._key)
    if type(segments) not in _SEQUENCES:
      raise ragged.InputError(
          f'{self._what}: entry {index} ({file!r}) has no list '
          f'{self._key!r} (fields: {", ".join(map(str, entry))}); set the '
          'segments key.')
    values = self._values
    for r, seg in enumerate(segments):
      # Inline checks: this runs once per segment of a million videos.
      if type(seg) in _SEQUENCES and len(seg) == 2:
        a, b = seg
        if type(a) in _NUMBERS and type(b) in _NUMBERS:
          values.append(a)
          values.append(b)
          continue
      raise ragged.InputError(ragged.row_message(
          self._what, file, r, seg, 'is not 2 numbers', is_proposal=False))
    self.files.append(file)
    self._counts.append(len(segments))

  def table(self):
    """The segments so far as a checked `ragged.RaggedRows`."""
    offsets = np.zeros(len(self.files) + 1, np.int64)
    np.cumsum(np.frombuffer(self._counts, np.int64), out=offsets[1:])
    # Float64 first, then float32: the official `as_f64() as f32`.
    rows = np.frombuffer(self._values, np.float64).astype(np.float32)
    table = ragged.RaggedRows(self.files, rows.reshape(-1, 2), offsets)
    ragged.check_rows(table, self._what, is_proposal=False)
    return table


def segments_from_entries(entries, file_key='file',
                          segments_key=('fake_segments',), what='metadata'):
  """Segments of in-memory metadata entries (a list of dicts).

  Args:
    entries: metadata as `json.load` gives it.
    file_key: field with the file name.
    segments_key: field with the segments, or a tuple of candidates (the
      first one the first entry has is used for all).
    what: name in messages.

  Returns:
    A `ragged.RaggedRows` of `[start, end]` float32 rows, one video per entry
    (repeated files kept, as the official evaluator scores each entry).
  """
  collector = _SegmentCollector(file_key, segments_key, what)
  for i, entry in enumerate(entries):
    collector.add(entry, i)
  return collector.table()


def read_metadata(path, file_key='file', segments_key=('fake_segments',), *,
                  chunk_bytes=CHUNK_BYTES):
  """Reads LAV-DF / AV-Deepfake1M metadata: a JSON list of objects, streamed.

  Only the file name and the segments of each entry are kept.

  Args:
    path: the JSON file.
    file_key: field with the file name.
    segments_key: field with the segments (`fake_segments`, `fake_periods`),
      or a tuple of candidates.
    chunk_bytes: text read at a time.

  Returns:
    A `ragged.RaggedRows` of `[start, end]` float32 rows.

  Raises:
    ragged.InputError: invalid JSON, a missing field or a malformed segment,
      naming the entry.
  """
  what = os.fspath(path)
  collector = _SegmentCollector(file_key, segments_key, what)
  with open(path, 'rb') as f:
    chunks = _Chunks(f, chunk_bytes)
    _expect(chunks, b'[', what, 'a JSON list of metadata objects')
    index, done, grow = 0, False, False
    while not done:
      chunks.fill(grow)
      final = chunks.eof
      try:
        text, _ = codecs.utf_8_decode(chunks.data, 'strict', final)
      except UnicodeDecodeError as e:
        raise ragged.InputError(
            f'{what}: not UTF-8 at byte {chunks.offset + e.start}.') from None

      def offset_of(pos, text=text):
        """File offset of character `pos` of `text`."""
        return chunks.offset + len(text[:pos].encode('utf-8'))

      pos = consumed = 0
      try:
        while True:
          pos = _skip_ws(text, pos)
          if pos >= len(text):
            raise _Incomplete()
          if text[pos] == ']':
            consumed, done = pos + 1, True
            break
          if index:
            if text[pos] != ',':
              raise ragged.InputError(
                  f'{what}: invalid JSON at byte {offset_of(pos)}: expected '
                  f"',' or ']', got {text[pos:pos + 20]!r}.")
            pos = _skip_ws(text, pos + 1)
          entry, pos = _decode_at(_DECODER.raw_decode, text, pos, final,
                                  what, offset_of)
          collector.add(entry, index)
          index += 1
          consumed = pos
      except _Incomplete:
        if final:
          raise ragged.InputError(
              f'{what}: the file ends inside the JSON list (truncated?).'
              ) from None
      n = len(text[:consumed].encode('utf-8'))
      chunks.consume(n)
      grow = n == 0
    _expect_end(chunks, what)
  return collector.table()
