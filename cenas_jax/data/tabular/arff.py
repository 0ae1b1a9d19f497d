"""A strict ARFF reader (numeric and nominal attributes, dense data) and the ARFF dataset loader.

``scipy.io.arff.loadarff`` is not used: it keeps the quotes of a quoted data value that holds a space
(``'dark blue'`` is then "not in" its own nominal's categories), splits double-quoted nominal values
at their commas, and its errors name no line; this reader handles both quote styles and names the
file and line of every error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from cenas_jax.data.tabular.columns import (Column, assemble, categorical_column, parse_floats,
                                            read_text, source_of)
from cenas_jax.data.tabular.dataset import TabularDataset, Task
from cenas_jax.errors import DataError

@dataclasses.dataclass(frozen=True)
class ArffAttribute:
  """An ARFF attribute: ``kind`` is ``"numeric"`` or ``"nominal"`` (with its declared categories)."""

  name: str
  kind: str
  categories: tuple[str, ...] = ()


def _split_arff(text: str, *, path: Path, lineno: int) -> list[str]:
  """Splits an ARFF line at commas, honouring '...' / "..." quotes and backslash escapes."""
  if "'" not in text and '"' not in text:
    return [t.strip() for t in text.split(",")]
  out, buf, quote, i = [], [], None, 0
  quoted_token = False
  while i < len(text):
    ch = text[i]
    if quote:
      if ch == "\\" and i + 1 < len(text):
        buf.append(text[i + 1])
        i += 2
        continue
      if ch == quote:
        quote = None
      else:
        buf.append(ch)
    elif ch in "'\"":
      if "".join(buf).strip():
        raise DataError(f"{path}: line {lineno}: a quote in the middle of a value.")
      buf, quote, quoted_token = [], ch, True
    elif ch == ",":
      out.append("".join(buf) if quoted_token else "".join(buf).strip())
      buf, quoted_token = [], False
    elif not (quoted_token and ch.isspace()):
      if quoted_token:
        raise DataError(f"{path}: line {lineno}: text after a closing quote.")
      buf.append(ch)
    i += 1
  if quote:
    raise DataError(f"{path}: line {lineno}: unterminated quote.")
  out.append("".join(buf) if quoted_token else "".join(buf).strip())
  return out


def _arff_name_and_rest(s: str, *, path: Path, lineno: int) -> tuple[str, str]:
  s = s.strip()
  if s[:1] in ("'", '"'):
    end = s.find(s[0], 1)
    while end > 0 and s[end - 1] == "\\":
      end = s.find(s[0], end + 1)
    if end < 0:
      raise DataError(f"{path}: line {lineno}: unterminated quoted name.")
    return s[1:end].replace("\\" + s[0], s[0]), s[end + 1:].strip()
  parts = s.split(None, 1)
  return parts[0], (parts[1].strip() if len(parts) > 1 else "")


def read_arff(path: str | Path) -> tuple[str, list[ArffAttribute], list[list[str]], list[int]]:
  """Strict ARFF reader for numeric and nominal attributes (dense data only).

  Returns:
    (relation name, attributes, rows of raw string values with "?" for missing, 1-based line number
    of each row).

  Raises:
    DataError: unsupported attribute type (string, date, relational), sparse data, wrong number of
      values on a data line, or a malformed header; each names the file and line.
  """
  path = Path(path)
  text = read_text(path)
  relation, attrs, rows, lines = "", [], [], []
  in_data = False
  for lineno, raw_line in enumerate(text.splitlines(), start=1):
    line = raw_line.strip()
    if not line or line.startswith("%"):
      continue
    if not in_data:
      keyword = line.split(None, 1)[0].lower()
      rest = line[len(keyword):].strip()
      if keyword == "@relation":
        relation = _arff_name_and_rest(rest, path=path, lineno=lineno)[0] if rest else ""
      elif keyword == "@attribute":
        attr_name, type_text = _arff_name_and_rest(rest, path=path, lineno=lineno)
        if not type_text:
          raise DataError(f"{path}: line {lineno}: attribute {attr_name!r} has no type.")
        if type_text.startswith("{"):
          if not type_text.endswith("}"):
            raise DataError(f"{path}: line {lineno}: nominal attribute {attr_name!r} lacks a '}}'.")
          cats = tuple(_split_arff(type_text[1:-1], path=path, lineno=lineno))
          if not all(cats) or len(set(cats)) != len(cats):
            raise DataError(f"{path}: line {lineno}: nominal attribute {attr_name!r} has empty or "
                            f"repeated values {list(cats)}.")
          attrs.append(ArffAttribute(attr_name, "nominal", cats))
        elif type_text.lower() in ("numeric", "real", "integer"):
          attrs.append(ArffAttribute(attr_name, "numeric"))
        else:
          raise DataError(f"{path}: line {lineno}: attribute {attr_name!r} has type {type_text!r}; "
                          "only numeric/real/integer and nominal {...} attributes are supported.")
      elif keyword == "@data":
        if not attrs:
          raise DataError(f"{path}: line {lineno}: @data before any @attribute.")
        in_data = True
      else:
        raise DataError(f"{path}: line {lineno}: unexpected header line {line[:60]!r}.")
      continue
    if line.startswith("{"):
      raise DataError(f"{path}: line {lineno}: sparse ARFF data is not supported.")
    values = _split_arff(line, path=path, lineno=lineno)
    if len(values) != len(attrs):
      raise DataError(f"{path}: line {lineno}: {len(values)} values, but {len(attrs)} attributes "
                      "are declared.")
    rows.append(values)
    lines.append(lineno)
  if not in_data:
    raise DataError(f"{path}: no @data section; not an ARFF file.")
  if not rows:
    raise DataError(f"{path}: the @data section is empty.")
  return relation, attrs, rows, lines


def load_arff_dataset(path: str | Path, target: str, *, name: str | None = None,
                      drop: Sequence[str] = (), task: Task | None = None) -> TabularDataset:
  """Loads an ARFF file (numeric + nominal attributes) into a TabularDataset.

  Nominal attributes become categorical columns with the declared category order; a nominal target
  gives classes in the declared order, a numeric target is handled as in ``load_csv_dataset``.

  Args:
    path: the ARFF file (optionally gzip-compressed).
    target: name of the target attribute.
    name: dataset name (default: the @relation name).
    drop: attributes to leave out (e.g. OpenML's row id and ignored attributes).
    task: as in ``load_csv_dataset``.
  """
  path = Path(path)
  relation, attrs, rows, lines = read_arff(path)
  names = [a.name for a in attrs]
  if target not in names:
    raise DataError(f"{path}: no target attribute {target!r}; the attributes are {names}.")
  unknown = sorted(set(drop) - set(names))
  if unknown:
    raise DataError(f"{path}: attributes to drop {unknown} are not declared.")
  row_label = lambda i: f"line {lines[i]}"  # noqa: E731
  missing = lambda s: s == "?"  # noqa: E731
  features, target_column = [], None
  for j, attr in enumerate(attrs):
    if attr.name in drop and attr.name != target:
      continue
    values = [r[j] for r in rows]
    if attr.kind == "numeric":
      typed = Column(attr.name, numeric=parse_floats(values, missing, file=path, column=attr.name,
                                                       row_label=row_label))
    else:
      typed = categorical_column(attr.name, values, missing, attr.categories, file=path,
                                  row_label=row_label)
    if attr.name == target:
      target_column = typed
    else:
      features.append(typed)
  if not features:
    raise DataError(f"{path}: no feature attributes besides the target {target!r}.")
  return assemble(name=name or relation or path.stem, features=features, target=target_column,
                   task=task, source=(source_of(path),), file=path, row_label=row_label)
