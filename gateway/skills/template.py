"""A tiny sandboxed template engine for skill prompts: ``{{ name }}``, ``{{#if}}``, ``{{#each}}``; no more.

Why not Jinja: a skill's prompt is data shipped by whoever deploys the skill, so the engine must not
be able to run code or reach Python objects. Values are looked up by key in dicts and by index in
lists, never by attribute; only JSON values (dict, list, str, int, float, bool, None) are accepted.
A missing variable is an error naming it and the template line, never an empty string.

Syntax::

    {{ name }}  {{ name.field }}  {{ name.0 }}      a value; non-strings render as compact JSON
    {{#if name}} ... {{else}} ... {{/if}}           falsy: null, false, 0, "", [], {}
    {{#each list}} {{ this }} {{ this.field }} {{ @index }} {{else}} (empty list) {{/each}}
    \\{{                                            a literal "{{"

A block tag alone on its line takes the whole line with it, so blocks do not leave blank lines.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

_TAG = re.compile(r"(\\)?\{\{\s*([^{}]*?)\s*\}\}")
_SEGMENT = r"(?:[A-Za-z_][A-Za-z0-9_-]*|\d+)"
_PATH = re.compile(rf"^(?:this|@index|[A-Za-z_][A-Za-z0-9_-]*)(?:\.{_SEGMENT})*$")
_BLOCK_OPEN = re.compile(r"^#(if|each)\s+(\S+)$")
_SUPPORTED = (
    "{{ name }}, {{ name.field }}, {{#if name}}, {{else}}, {{/if}}, {{#each name}}, {{ this }}, {{/each}}"
)
_JSON_TYPES = (dict, list, str, int, float, bool, type(None))


class TemplateError(ValueError):
    """A template that cannot be parsed or rendered; ``line`` is counted from ``first_line``."""

    def __init__(self, reason: str, line: int) -> None:
        super().__init__(f"line {line}: {reason}")
        self.reason = reason
        self.line = line


@dataclass(frozen=True)
class _Text:
    text: str


@dataclass(frozen=True)
class _Var:
    path: tuple[str, ...]
    line: int


@dataclass
class _Block:
    kind: str  # "if" or "each"
    path: tuple[str, ...]
    line: int
    body: list[_Node] = field(default_factory=list)
    otherwise: list[_Node] | None = None


_Node = _Text | _Var | _Block


@dataclass(frozen=True)
class _Token:
    tag: str | None  # None: literal text
    text: str
    line: int


@dataclass(frozen=True)
class _Frame:
    item: Any
    index: int


class Template:
    """A parsed template; parsing checks the syntax, ``render`` checks the data."""

    def __init__(self, source: str, *, first_line: int = 1) -> None:
        self.source = source
        self._nodes = _parse(_strip_standalone(_tokenize(source, first_line)))

    def render(self, context: Mapping[str, Any]) -> str:
        out: list[str] = []
        _render(self._nodes, context, [], out)
        return "".join(out)

    def variables(self) -> set[str]:
        """The top-level names the template reads (``this`` and ``@index`` excluded)."""
        names: set[str] = set()
        _collect(self._nodes, names)
        return names


def render(source: str, context: Mapping[str, Any], *, first_line: int = 1) -> str:
    return Template(source, first_line=first_line).render(context)


# --- parsing -------------------------------------------------------------------------------------


def _tokenize(source: str, first_line: int) -> list[_Token]:
    tokens: list[_Token] = []
    pos, line = 0, first_line
    for match in _TAG.finditer(source):
        text = source[pos : match.start()]
        _check_no_open_tag(text, line)
        tokens.append(_Token(None, text, line))
        line += text.count("\n")
        if match.group(1):  # an escaped "\{{": literal text
            tokens.append(_Token(None, match.group(0)[1:], line))
        else:
            tokens.append(_Token(match.group(2), match.group(0), line))
        line += match.group(0).count("\n")
        pos = match.end()
    _check_no_open_tag(source[pos:], line)
    tokens.append(_Token(None, source[pos:], line))
    return tokens


def _check_no_open_tag(text: str, line: int) -> None:
    if found := re.search(r"(?<!\\)\{\{", text):
        where = line + text.count("\n", 0, found.start())
        raise TemplateError("'{{' without a matching '}}' (write \\{{ for a literal '{{')", where)


def _is_block_tag(tag: str | None) -> bool:
    return tag is not None and (tag[:1] in "#/" or tag == "else")


def _strip_standalone(tokens: list[_Token]) -> list[_Token]:
    """Drop the line of a block tag that stands alone on it (decided on the original text)."""
    texts = [t.text for t in tokens]
    last = len(tokens) - 1
    for i, token in enumerate(tokens):
        # tokens alternate text, tag, text, ...: a tag always has a text token on each side
        if not _is_block_tag(token.tag):
            continue
        before, after = tokens[i - 1].text, tokens[i + 1].text
        alone_before = re.search(r"\n[ \t]*$", before) or (i - 1 == 0 and re.fullmatch(r"[ \t]*", before))
        alone_after = re.match(r"[ \t]*\r?\n", after) or (i + 1 == last and re.fullmatch(r"[ \t]*", after))
        if alone_before and alone_after:
            texts[i - 1] = re.sub(r"[ \t]*$", "", texts[i - 1])
            texts[i + 1] = re.sub(r"^[ \t]*(?:\r?\n)?", "", texts[i + 1])
    return [_Token(t.tag, text, t.line) for t, text in zip(tokens, texts, strict=True)]


def _parse(tokens: list[_Token]) -> list[_Node]:
    root: list[_Node] = []
    stack: list[_Block] = []
    for token in tokens:
        into = _open_list(root, stack)
        if token.tag is None:
            if token.text:
                into.append(_Text(token.text))
        elif opened := _BLOCK_OPEN.match(token.tag):
            block = _Block(opened.group(1), _path(opened.group(2), token.line, stack), token.line)
            into.append(block)
            stack.append(block)
        elif token.tag == "else":
            if not stack or stack[-1].otherwise is not None:
                raise TemplateError(
                    "{{else}} outside an {{#if}} or {{#each}} block, or twice in one", token.line
                )
            stack[-1].otherwise = []
        elif token.tag in ("/if", "/each"):
            _close(token.tag, token.line, stack)
        else:
            into.append(_Var(_path(token.tag, token.line, stack), token.line))
    if stack:
        kind = stack[-1].kind
        raise TemplateError(f"{{{{#{kind}}}}} is never closed with {{{{/{kind}}}}}", stack[-1].line)
    return root


def _open_list(root: list[_Node], stack: list[_Block]) -> list[_Node]:
    """Where the next node goes: the innermost open block's body or else-branch."""
    if not stack:
        return root
    block = stack[-1]
    return block.otherwise if block.otherwise is not None else block.body


def _close(tag: str, line: int, stack: list[_Block]) -> None:
    if not stack:
        raise TemplateError(f"{{{{{tag}}}}} without an open {{{{#{tag[1:]}}}}}", line)
    if stack[-1].kind != tag[1:]:
        raise TemplateError(f"{{{{{tag}}}}} where {{{{/{stack[-1].kind}}}}} was expected", line)
    stack.pop()


def _path(text: str, line: int, stack: Sequence[_Block]) -> tuple[str, ...]:
    if not _PATH.match(text):
        raise TemplateError(f"unsupported tag {{{{ {text} }}}} (supported: {_SUPPORTED})", line)
    parts = tuple(text.split("."))
    if parts[0] in ("this", "@index") and not any(b.kind == "each" for b in stack):
        raise TemplateError(f"{{{{ {text} }}}} outside an {{{{#each}}}} block", line)
    if parts[0] == "@index" and len(parts) > 1:
        raise TemplateError("@index has no fields", line)
    return parts


def _collect(nodes: list[_Node], names: set[str]) -> None:
    for node in nodes:
        if isinstance(node, _Var | _Block) and node.path[0] not in ("this", "@index"):
            names.add(node.path[0])
        if isinstance(node, _Block):
            _collect(node.body, names)
            _collect(node.otherwise or [], names)


# --- rendering -----------------------------------------------------------------------------------


def _render(nodes: list[_Node], context: Mapping[str, Any], frames: list[_Frame], out: list[str]) -> None:
    for node in nodes:
        if isinstance(node, _Text):
            out.append(node.text)
        elif isinstance(node, _Var):
            out.append(_format(_lookup(node.path, node.line, context, frames)))
        elif node.kind == "if":
            chosen = node.body if _lookup(node.path, node.line, context, frames) else node.otherwise
            _render(chosen or [], context, frames, out)
        else:
            _render_each(node, context, frames, out)


def _render_each(node: _Block, context: Mapping[str, Any], frames: list[_Frame], out: list[str]) -> None:
    items = _lookup(node.path, node.line, context, frames)
    if items is None:
        items = []
    if not isinstance(items, list):
        raise TemplateError(
            f"{{{{#each {'.'.join(node.path)}}}}} needs a list, got {_kind(items)}", node.line
        )
    if not items:
        _render(node.otherwise or [], context, frames, out)
    for index, item in enumerate(items):
        _render(node.body, context, [*frames, _Frame(item, index)], out)


def _lookup(path: tuple[str, ...], line: int, context: Mapping[str, Any], frames: list[_Frame]) -> Any:
    head, rest = path[0], path[1:]
    if head == "@index":
        return frames[-1].index
    if head == "this":
        value = frames[-1].item
    elif head in context:
        value = context[head]
    else:
        raise TemplateError(f"missing variable '{head}'", line)
    for depth, part in enumerate(rest, start=1):
        value = _step(value, part, ".".join(path[: depth + 1]), line)
    if not isinstance(value, _JSON_TYPES):
        raise TemplateError(f"'{'.'.join(path)}' is a {_kind(value)}, not a JSON value", line)
    return value


def _step(value: Any, part: str, dotted: str, line: int) -> Any:
    if isinstance(value, dict):
        if part not in value:
            raise TemplateError(f"missing variable '{dotted}'", line)
        return value[part]
    if isinstance(value, list):
        if not part.isdigit():
            raise TemplateError(
                f"'{dotted}': a list has no field '{part}' (use a number or {{{{#each}}}})", line
            )
        if int(part) >= len(value):
            raise TemplateError(f"missing variable '{dotted}' (the list has {len(value)} items)", line)
        return value[int(part)]
    raise TemplateError(f"'{dotted}': cannot read field '{part}' of a {_kind(value)}", line)


def _format(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _kind(value: Any) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean", int: "integer", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)
