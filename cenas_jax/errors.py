"""Exception types shared across the library.

Every error raised for bad input names the offending file (and row, where there is one) or flag, and
says what to do about it.
"""


class CenasError(Exception):
  """Base class of the library's own errors."""


class DataError(CenasError, ValueError):
  """A data file exists but its content is invalid (wrong header, gaps, NaN, negative values, ...)."""


class DataUnavailableError(CenasError, FileNotFoundError):
  """A data file is missing and cannot be downloaded (offline, or no URL is known).

  The message names the file, the location where it is expected and the URL to fetch it from.
  """


class ChecksumError(DataError):
  """A file's sha256 does not match the expected value."""
