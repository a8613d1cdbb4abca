"""Readers for the deploy files: the Dockerfile, the Kubernetes manifests, nginx's config language.

Small and strict: each reads only the constructs the shipped files use and raises on anything else, so a
test never passes because a reader skipped what it did not understand.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
KUBERNETES = REPO / "deploy" / "kubernetes"
ENVOY = REPO / "deploy" / "envoy" / "envoy.yaml"
NGINX = REPO / "deploy" / "nginx" / "glance-grpc-gateway.conf"

Doc = dict[str, Any]


# -- Dockerfile ----------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str  # upper case
    flags: dict[str, str]  # --from=build and the like
    args: str  # the rest, continuation lines joined


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        """The stage's ENV as the container sees it ($NAME references to earlier values expanded)."""
        values: dict[str, str] = {}
        for instruction in self.all("ENV"):
            for pair in shlex.split(instruction.args):
                if "=" not in pair:
                    raise ValueError(f"only the ENV KEY=value form is read: {instruction.args!r}")
                key, value = pair.split("=", 1)
                values[key] = re.sub(r"\$\{?(\w+)\}?", lambda m: values.get(m[1], m[0]), value)
        return values


def dockerfile_instructions(text: str) -> list[Instruction]:
    """Instructions in order: comments dropped, backslash continuations joined, leading --flags split off."""
    instructions = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full, pending = pending + stripped, ""
        keyword, _, rest = full.partition(" ")
        flags = {}
        rest = rest.strip()
        while rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            name, _, value = flag[2:].partition("=")
            flags[name] = value
            rest = rest.strip()
        instructions.append(Instruction(keyword.upper(), flags, rest))
    if pending:
        raise ValueError("the Dockerfile ends inside a continued line")
    return instructions


def dockerfile_stages(text: str) -> list[Stage]:
    stages: list[Stage] = []
    for instruction in dockerfile_instructions(text):
        if instruction.keyword == "FROM":
            words = instruction.args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            if len(words) not in (1, 3) or (len(words) == 3 and name is None):
                raise ValueError(f"unexpected FROM {instruction.args!r}")
            stages.append(Stage(words[0], name))
        elif instruction.keyword == "ARG" and not stages:
            raise ValueError("ARG before FROM is not read here")
        elif not stages:
            raise ValueError(f"{instruction.keyword} before the first FROM")
        else:
            stages[-1].instructions.append(instruction)
    return stages


def exec_form(instruction: Instruction) -> list[str]:
    """ENTRYPOINT/CMD in exec form (a JSON array of strings); a shell form string raises."""
    value = json.loads(instruction.args)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{instruction.keyword} is not in exec form: {instruction.args}")
    return value


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Whether Docker leaves `path` (relative to the context) out of the build context: the last pattern
    that matches the path or one of its parent directories decides ("!" re-includes)."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for raw in patterns:
        negated = raw.startswith("!")
        pattern = raw[1:] if negated else raw
        regex = _dockerignore_regex(pattern.strip("/"))
        if any(regex.fullmatch(candidate) for candidate in candidates):
            excluded = not negated
    return excluded


def _dockerignore_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out)


def dockerignore_patterns() -> list[str]:
    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


# -- Kubernetes ----------------------------------------------------------------------------


def kubernetes_docs() -> list[Doc]:
    """Every document of every manifest (kustomization.yaml included), each with its file name."""
    docs = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append({**doc, "__file__": path.name})
    return docs


def one(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [d for d in docs if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name)]
    if len(found) != 1:
        raise AssertionError(f"expected one {kind} {name or ''}, found {len(found)}")
    return found[0]


def quantity(value: str | int | float) -> float:
    """A Kubernetes quantity as a number: "500m" -> 0.5, "256Mi" -> 268435456, 2 -> 2."""
    text = str(value)
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1e3, "M": 1e6, "G": 1e9}
    for suffix in sorted(units, key=len, reverse=True):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * units[suffix]
    return float(text)


# -- nginx ---------------------------------------------------------------------------------


@dataclass
class Block:
    """One nginx directive: its name, arguments and, for a block, what it contains."""

    name: str
    args: list[str]
    children: list[Block] | None = None

    def directives(self, name: str) -> list[Block]:
        return [child for child in self.children or [] if child.name == name]

    def value(self, name: str) -> list[str] | None:
        """The arguments of this block's one `name` directive, None when it has none."""
        found = self.directives(name)
        if len(found) > 1:
            raise AssertionError(f"{name} appears {len(found)} times in {self.name} {self.args}")
        return found[0].args if found else None


_TOKEN = re.compile(r"""\s*(?:(#[^\n]*)|("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')|([{};])|([^\s{};"'#]+))""")


def nginx_parse(text: str) -> Block:
    """The config as a tree of directives (a root block named "main")."""
    root = Block("main", [], [])
    stack = [root]
    words: list[str] = []
    position = 0
    text = text.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise ValueError(f"cannot read nginx config at {text[position : position + 40]!r}")
        position = match.end()
        comment, quoted, punct, word = match.groups()
        if comment is not None:
            continue
        if quoted is not None:
            words.append(quoted[1:-1])
        elif word is not None:
            words.append(word)
        elif punct == ";":
            if not words:
                raise ValueError("an empty nginx directive")
            stack[-1].children.append(Block(words[0], words[1:]))  # type: ignore[union-attr]
            words = []
        elif punct == "{":
            block = Block(words[0], words[1:], [])
            stack[-1].children.append(block)  # type: ignore[union-attr]
            stack.append(block)
            words = []
        else:  # "}"
            if words or len(stack) == 1:
                raise ValueError("unbalanced braces in the nginx config")
            stack.pop()
    if len(stack) != 1 or words:
        raise ValueError("the nginx config ends inside a block or directive")
    return root


def nginx_location(server: Block, uri: str) -> Block | None:
    """The location nginx picks for `uri`: an exact match, else the first matching regex (in order), else
    the longest prefix (no ^~ locations are used in the shipped file)."""
    locations = server.directives("location")
    for location in locations:
        if location.args[0] == "=" and location.args[1] == uri:
            return location
    for location in locations:
        if location.args[0] in ("~", "~*"):
            flags = re.IGNORECASE if location.args[0] == "~*" else 0
            if re.search(location.args[1], uri, flags):
                return location
    prefixes = [loc for loc in locations if len(loc.args) == 1 and uri.startswith(loc.args[0])]
    return max(prefixes, key=lambda loc: len(loc.args[0]), default=None)


def nginx_seconds(text: str) -> float:
    """An nginx time: "90s", "1h", "500ms", "2m", "60"."""
    match = re.fullmatch(r"(\d+)(ms|s|m|h|d)?", text)
    if match is None:
        raise ValueError(f"not an nginx time: {text!r}")
    scale = {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600, "d": 86400}[match[2]]
    return int(match[1]) * scale
