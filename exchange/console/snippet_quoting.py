"""Values written into the set-up snippets an owner copies (exchange.console.aws_setup, ci_setup), each
quoted for every language that will read it. Pure.

Rule audiences, role names, issuer ids… are chosen by a tenant's operators; the snippets are run
by its owners (``terraform apply``, a CloudFormation deploy, a CI job), sometimes with more power.
So no value may be read as anything but itself: not an HCL interpolation or directive, not an
IAM policy variable, not a shell expansion, not a GitHub expression, not a GitLab variable, not
a YAML structure or a line break that ends a comment. Each function here writes one value for one
reader; where two read it in turn (Terraform, then IAM), they are applied inner reader first.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Sequence
from urllib.parse import quote

__all__ = [
    "comment_text",
    "gha_literal",
    "gitlab_literal",
    "hcl_list",
    "hcl_str",
    "iam_literal",
    "sh_url",
    "sh_word",
    "yaml_scalar",
    "yaml_str",
]

_HCL_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(ch: str, escapes: dict[str, str]) -> str:
    if ch in escapes:
        return escapes[ch]
    if " " <= ch <= "~":
        return ch
    code = ord(ch)  # control characters, and anything beyond ASCII (bidirectional controls included)
    return f"\\u{code:04X}" if code <= 0xFFFF else f"\\U{code:08X}"


def hcl_str(value: str) -> str:
    """A Terraform (HCL native syntax) quoted template that evaluates to exactly ``value``: the
    escapes of HCL's spec ("Template Literals": ``\\\\``, ``\\"``, ``\\n``, ``\\uNNNN``,
    ``\\UNNNNNNNN``), and ``${`` / ``%{`` doubled to ``$${`` / ``%%{`` so that no interpolation
    or directive can start."""
    text = "".join(_escaped(ch, _HCL_ESCAPES) for ch in value)
    return '"' + text.replace("${", "$${").replace("%{", "%%{") + '"'


def hcl_list(values: Sequence[str]) -> str:
    return "[" + ", ".join(hcl_str(v) for v in values) + "]"


def iam_literal(value: str) -> str:
    """``value`` as a string IAM compares literally in a policy's ``Resource`` and ``Condition``
    values, where ``${…}`` is a policy variable: every ``$`` written ``${$}`` (IAM User Guide,
    "Policy variables", special characters)."""
    return value.replace("$", "${$}")


_YAML_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def yaml_str(value: str) -> str:
    """A YAML double-quoted scalar (YAML 1.1 and 1.2 alike) holding exactly ``value``, in
    printable ASCII: no line break, indicator or comment can come out of it."""
    return '"' + "".join(_escaped(ch, _YAML_ESCAPES) for ch in value) + '"'


# Plain when it cannot be read as anything else: no indicator, no space, no YAML 1.1 boolean,
# null or number (each starts with a letter, and the words below are refused).
_PLAIN = re.compile(r"[A-Za-z][A-Za-z0-9@:/._+=,-]*")
_YAML_WORDS = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null"})


def yaml_scalar(value: str) -> str:
    """``value`` as a YAML scalar: plain when that reads back as the same string (an ARN, a
    region), else double-quoted (``yaml_str``)."""
    if _PLAIN.fullmatch(value) and not value.endswith(":") and value.casefold() not in _YAML_WORDS:
        return value
    return yaml_str(value)


def gha_literal(value: str) -> str:
    """``value`` where GitHub Actions evaluates expressions (``env``, ``run``, …): a ``${{``
    becomes the expression ``${{ '${{' }}``, which evaluates to it (GitHub has no escape)."""
    return value.replace("${{", "${{ '${{' }}")


def gitlab_literal(value: str) -> str:
    """``value`` where GitLab CI expands variables (``variables:``, ``id_tokens: aud:``): every
    ``$`` written ``$$`` (GitLab CI/CD variables, "Use the $ character in CI/CD variables")."""
    return value.replace("$", "$$")


def comment_text(value: str) -> str:
    """``value`` inside a comment: one line of printable ASCII (JSON's escapes), so it cannot end
    the comment or the YAML block it is in."""
    return json.dumps(value)[1:-1]


def sh_word(value: str) -> str:
    """One shell word, POSIX-quoted, for a command shown in a comment (``comment_text`` first)."""
    return shlex.quote(comment_text(value))


def sh_url(url: str) -> str:
    """A URL as one shell word in a script: every character a URL need not hold as itself is
    percent-encoded (so no ``{``, ``}``, space, quote or line break is left), then POSIX
    single-quoted (so ``$``, backticks and ``;`` are inert)."""
    return shlex.quote(quote(url, safe=":/?#[]@!$&'()*+,;=%-._~"))
