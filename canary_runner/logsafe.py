"""Text for a GitHub Actions log that cannot run workflow commands.

The runner reads the action's stdout and stderr line by line and executes any line that, after leading
whitespace, starts with `::name::` (`::error::`, `::add-mask::`, `::stop-commands::`), or that holds
`##[name]` anywhere (the legacy form). Text that came from a run, an artifact or a PR (config and
metric names, check reasons, error messages, another process's output) is data: a line break inside it
(CR, LF, and the Unicode ones some readers split on: VT, FF, FS/GS/RS, NEL, U+2028, U+2029) would start
a line of the attacker's choosing. So:

- `escape_data` / `escape_property` encode text for inside one of our own commands, as GitHub's toolkit
  does (`%`, CR, LF; and `:` `,` in properties), with every other line break encoded as LF too;
- `safe_lines` turns text for the log into lines of which none is a command: terminal escape sequences
  (ANSI colours, OSC titles and hyperlinks) and control characters are dropped, a line that would start a
  command gets a backslash in front, and `##[` becomes `##\\[`;
- `SafeStream` applies `safe_lines` to everything written to a stream, so `print`, logging, warnings
  and tracebacks of this process all go through it; the action writes its own commands to the raw stream.

Stdlib only: imported by the action's entry point before anything else.
"""

from __future__ import annotations

import io
import re
import unicodedata
from typing import Any, TextIO

# Every character some reader of the log may take for the end of a line (Python's str.splitlines set).
LINE_BREAK_CHARS = "\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
_LINE_BREAK = re.compile("\r\n|[" + LINE_BREAK_CHARS + "]")
_OTHER_BREAKS = re.compile("[" + LINE_BREAK_CHARS[2:] + "]")  # all but CR and LF
# Terminal escape sequences: OSC (titles, hyperlinks) up to BEL or ST, CSI (colours, cursor), other
# two-byte ESC sequences, and their 8-bit C1 forms.
_ESCAPES = re.compile(
    r"(?:\x1b\]|\x9d)[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"  # OSC ... BEL | ESC \ | ST
    r"|(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"  # CSI
    r"|\x1b[P^_X][^\x1b\x9c]*(?:\x1b\\|\x9c)?"  # DCS, PM, APC, SOS strings
    r"|\x1b[ -/]*[0-~]?"  # any other escape
)
# Controls left after the escapes: C0 except TAB, DEL, C1. (Line breaks are split on before this.)
_CONTROLS = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x9f]")
COMMAND_START = "::"
LEGACY_COMMAND = "##["


def strip_escapes(text: str) -> str:
    """`text` without terminal escape sequences and control characters (line breaks kept)."""
    return _CONTROLS.sub("", _ESCAPES.sub("", text))


def split_lines(text: str) -> list[str]:
    """Split at every line break any reader may honour (see LINE_BREAK_CHARS)."""
    return _LINE_BREAK.split(text)


def _lead_stripped(line: str) -> str:
    """`line` without what any reader may skip before a command: whitespace (the runner trims .NET's
    whitespace, a set close to Python's) and invisible format characters (zero-width space, BOM), to be safe."""
    i = 0
    while i < len(line) and (line[i].isspace() or unicodedata.category(line[i]) in ("Cf", "Zs", "Zl", "Zp")):
        i += 1
    return line[i:]


def neutralise_line(line: str) -> str:
    """One line (no line breaks) that the runner shows as text and never executes."""
    line = strip_escapes(line).replace(LEGACY_COMMAND, "##\\[")
    if _lead_stripped(line).startswith(COMMAND_START):
        line = "\\" + line
    return line


def safe_lines(text: Any) -> list[str]:
    """`text` as log lines, none of which is a workflow command."""
    return [neutralise_line(line) for line in split_lines(str(text))]


def safe_text(text: Any) -> str:
    """`safe_lines` joined with LF: for one log message."""
    return "\n".join(safe_lines(text))


def escape_data(value: Any) -> str:
    """A workflow command's message: `%`, CR and LF escaped (GitHub's rules; every other line break
    encoded as LF), terminal escapes dropped, so text can neither end the command early nor inject another."""
    text = strip_escapes(_OTHER_BREAKS.sub("\n", str(value)))
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(value: Any) -> str:
    """A workflow command's property value: also `:` and `,`, which separate properties."""
    return escape_data(value).replace(":", "%3A").replace(",", "%2C")


class SafeStream(io.TextIOBase):
    """A text stream that writes whole lines to `raw`, each through `neutralise_line`.

    A partial line waits for its line break (or `flush_line`, which the action calls before writing one
    of its own commands to `raw`, so the log keeps its order). Writes to `fileno()` (child processes,
    C libraries) bypass it: those are the code under test, not data.
    """

    def __init__(self, raw: TextIO):
        super().__init__()
        self.raw = raw
        self._pending = ""

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.raw, "encoding", None) or "utf-8"

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return getattr(self.raw, "errors", None)

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False  # colours and progress bars would be escapes to strip anyway

    def fileno(self) -> int:
        return self.raw.fileno()

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        data = self._pending + text
        parts = split_lines(data)
        # A CR at the very end may be the first half of CRLF: keep it with the partial line.
        if data.endswith("\r"):
            parts[-1:] = []
            self._pending = parts.pop() + "\r" if parts else "\r"
        else:
            self._pending = parts.pop()
        if parts:
            self.raw.write("".join(neutralise_line(p) + "\n" for p in parts))
        return len(text)

    def flush_line(self) -> None:
        """Write a pending partial line now, as a line of its own."""
        if self._pending:
            pending, self._pending = self._pending.rstrip("\r"), ""
            self.raw.write(neutralise_line(pending) + "\n")
        self.raw.flush()

    def flush(self) -> None:
        self.raw.flush()

    def close(self) -> None:
        if not self.closed:
            self.flush_line()
        super().close()


def flush_streams(*streams: Any) -> None:
    """Write out what `SafeStream`s among `streams` hold, before a command goes to the raw stream."""
    for s in streams:
        if isinstance(s, SafeStream):
            s.flush_line()
        elif s is not None and hasattr(s, "flush"):
            s.flush()
