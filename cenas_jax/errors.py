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


class ConfigError(CenasError, ValueError):
  """A configuration value is invalid. ``field`` is the config field's name, which binaries expose
  as the flag ``--<field>``; ``message`` says what is wrong and what to do.
  """

  def __init__(self, field: str, message: str):
    super().__init__(f"{field}: {message}")
    self.field = field
    self.message = message


class WorkdirError(CenasError):
  """An output directory cannot be used: not writable, not a directory, holds files of another tool
  or of another kind of run, or a run with other settings. The message names the directory and says
  what to do; nothing was written.
  """
