"""Parameters of notebooks and batches: literal values from the command line, parameters files
(YAML or JSON), and the rule that nothing secret is ever a parameter.

A parameter is refused wherever it is given (``-p``, a parameters file, at any depth) when its name
looks like a credential in any spelling (``api_key``, ``openaiApiKey``, ``OPENAI_KEY``, ``hf-token``,
``password``, ``auth``...) or its value looks like one (a known key prefix such as ``sk-``, ``ghp_``,
``hf_``, ``AKIA``, or a long random-looking string). What a report records is redacted by the same
rule (:func:`redact_secrets`, :func:`redact_command`). Keys are read from the environment by the
code that needs them.
"""
from __future__ import annotations

import ast
import json
import math
import re
from collections import Counter
from pathlib import Path

import yaml

# the words of a name (snake, kebab, camel or upper case) that name a credential; "tokens" (a count,
# max_tokens), "tokenizer" and "secretary" are other words
SECRET_WORDS = {"key", "apikey", "token", "secret", "secrets", "password", "passwords", "passwd", "pwd",
                "passphrase", "credential", "credentials", "auth", "authorization", "bearer"}
SECRET_JOINED = ("apikey", "accesskey", "secretkey", "privatekey", "authtoken", "accesstoken", "clientsecret")
NAME_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
# values: known key prefixes (OpenAI, GitHub, GitLab, Slack, AWS, Hugging Face, Google, JWT, PEM)
# and credentials in a URL's query
SECRET_VALUE = re.compile(
    r"(?<![A-Za-z0-9])(sk-[A-Za-z0-9_-]{4,}|sk_(live|test)_|gh[pousr]_[A-Za-z0-9]{8,}|github_pat_|glpat-|"
    r"xox[abeoprs]-|xapp-|(AKIA|ASIA)[A-Z0-9]{12,}|hf_[A-Za-z0-9]{8,}|AIza[0-9A-Za-z_-]{20,}|ya29\.|"
    r"eyJ[A-Za-z0-9_-]{8,}\.|-----BEGIN [A-Z ]*PRIVATE KEY)|[?&](api[_-]?key|key|token|access_token|secret)=")
RANDOM_RUN = re.compile(r"[A-Za-z0-9+_=-]{24,}")     # no "/" or ".": paths and file names are not keys


def parse_value(text: str):
    """``-p key=value`` values: Python/JSON literals (None, 3, 0.5, [1,2], "x"), else a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        low = text.lower()
        if low in ("null", "none"):
            return None
        if low in ("true", "false"):
            return low == "true"
        return text


def load_params_file(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise SystemExit(f"{path}: parameters file not found")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise SystemExit(f"{path}: invalid YAML: {e}") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise SystemExit(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from None
    if not isinstance(data, dict):
        raise SystemExit(f"{path}: expected a mapping of parameter names to values")
    return data


def secret_name(name) -> bool:
    """Does a parameter name look like a credential, in any spelling (case, ``_``, ``-``, camel)?"""
    words = [w.lower() for w in NAME_WORDS.findall(str(name))]
    joined = "".join(words)
    return (any(w in SECRET_WORDS for w in words) or any(j in joined for j in SECRET_JOINED)
            or joined.endswith(("token", "secret", "password", "passwd", "credentials")))


def _random_looking(run: str) -> bool:
    """Letters and digits with more than 4 bits of entropy per character (hex never has more)."""
    counts = Counter(run)
    bits = -sum(c / len(run) * math.log2(c / len(run)) for c in counts.values())
    return bits > 4.0 and any(ch.isdigit() for ch in run) and any(ch.isalpha() for ch in run)


def secret_value(value) -> bool:
    """Does a value (a string, or any string inside lists and dicts) look like a credential?"""
    if isinstance(value, dict):
        return any(secret_value(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(secret_value(v) for v in value)
    if not isinstance(value, str):
        return False
    return bool(SECRET_VALUE.search(value)) or any(_random_looking(m) for m in RANDOM_RUN.findall(value))


def check_no_secrets(params: dict, where: str) -> None:
    """Refuse any key (at any depth) whose name or value looks like a credential; the message never
    shows the value."""
    for k, v in params.items():
        if secret_name(k):
            raise SystemExit(f"{where}: parameter {k!r} looks like a secret (its name); API keys are read from "
                             f"the environment (e.g. OPENAI_API_KEY) and never passed as parameters")
        if isinstance(v, dict):
            check_no_secrets(v, f"{where}: {k}")
        elif secret_value(v):
            raise SystemExit(f"{where}: the value of parameter {k!r} looks like a secret (a key prefix or a long "
                             f"random string; not shown); API keys are read from the environment, never passed "
                             f"as parameters")


def redact_secrets(params: dict) -> dict:
    """``params`` without the keys whose name looks like a credential, and with ``"<redacted>"``
    for a value that looks like one (what a report may hold)."""
    return {k: redact_secrets(v) if isinstance(v, dict) else "<redacted>" if secret_value(v) else v
            for k, v in params.items() if not secret_name(k)}


def redact_command(argv: list[str]) -> str:
    """The command line as a report records it: ``KEY=VALUE`` with a secret-looking name or value,
    the value after a secret-looking ``--flag``, and any secret-looking argument become ``<redacted>``."""
    out, hide_next = [], False
    for a in argv:
        key, eq, value = a.partition("=")
        if hide_next or secret_value(a if not eq else value):
            a = f"{key}=<redacted>" if eq and not hide_next else "<redacted>"
        elif eq and secret_name(key.lstrip("-")):
            a = f"{key}=<redacted>"
        hide_next = a.startswith("--") and not eq and secret_name(a)
        out.append(a)
    return " ".join(out)
