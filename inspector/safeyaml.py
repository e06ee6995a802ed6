"""YAML for plant configs: bounded in size, depth and alias expansion; no duplicate keys.

``yaml.safe_load`` builds no objects but still trusts the document's shape: a few
hundred bytes of nested aliases (a "billion laughs") expand to billions of nodes for
whoever walks the result, deeply nested brackets exhaust the recursion limit, and a
key given twice silently keeps the last value. ``load`` refuses all of those with one
``YamlError`` that says where, before anything walks the data.

Anchors and aliases stay allowed (``rules: *rules`` shares a line's rules), as long as
the document, fully expanded, has at most ``max_nodes`` nodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_BYTES = 1_000_000
MAX_DEPTH = 32
MAX_NODES = 100_000
MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass(frozen=True)
class Limits:
    max_bytes: int = MAX_BYTES
    max_depth: int = MAX_DEPTH
    max_nodes: int = MAX_NODES


class YamlError(ValueError):
    """A document we refuse to load; the message starts with its location when known."""


def _where(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""


class _Loader(yaml.SafeLoader):
    """SafeLoader that bounds nesting while composing and refuses duplicate keys."""

    limits = Limits()

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self._depth += 1
        try:
            if self._depth > self.limits.max_depth:
                mark = self.peek_event().start_mark
                raise YamlError(f"{_where(mark)}nested deeper than {self.limits.max_depth} levels")
            self._nodes += 1  # an alias counts once here; expanded_shape counts it fully
            if self._nodes > self.limits.max_nodes:
                mark = self.peek_event().start_mark
                raise YamlError(f"{_where(mark)}more than {self.limits.max_nodes} nodes")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[tuple[str, str], Any] = {}
        for key_node, _ in node.value:
            if key_node.tag == MERGE_TAG or not isinstance(key_node, ScalarNode):
                continue
            ident = (key_node.tag, key_node.value)
            if ident in seen:
                first = seen[ident]
                raise YamlError(
                    f"{_where(key_node.start_mark)}duplicate key {key_node.value!r} "
                    f"(first given at line {first.line + 1}, column {first.column + 1})"
                )
            seen[ident] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def expanded_shape(root: Node, budget: int) -> tuple[int, int]:
    """(nodes, depth) of the document once every alias is expanded; counting stops once
    past ``budget`` nodes.

    Shared nodes (aliases) are measured once and memoised, so this is linear in the
    composed graph however large the expansion; a recursive alias is an error.
    """
    shapes: dict[int, tuple[int, int]] = {}
    active: set[int] = set()

    def shape(node: Node) -> tuple[int, int]:
        known = shapes.get(id(node))
        if known is not None:
            return known
        if id(node) in active:
            raise YamlError(f"{_where(node.start_mark)}an alias refers to itself")
        active.add(id(node))
        total, deepest = 1, 0
        if isinstance(node, SequenceNode):
            children: list[Node] = list(node.value)
        elif isinstance(node, MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = []
        for child in children:
            n, d = shape(child)
            total, deepest = total + n, max(deepest, d)
            if total > budget:
                break  # no need to know by how much
        active.discard(id(node))
        shapes[id(node)] = (total, deepest + 1)
        return total, deepest + 1

    return shape(root)


def decode_utf8(data: bytes) -> str:
    """Strict UTF-8 (a leading BOM allowed); the error names the bad byte's position."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        start = exc.start
        line = data.count(b"\n", 0, start) + 1
        line_start = data.rfind(b"\n", 0, start) + 1
        column = len(data[line_start:start].decode("utf-8", "replace")) + 1  # characters
        raise YamlError(
            f"line {line}, column {column}: not UTF-8 (byte 0x{data[start]:02x}); "
            "save the file as UTF-8"
        ) from None


def load(text: str | bytes, limits: Limits | None = None) -> Any:
    """Parse one YAML document within ``limits``; raise YamlError (with its location)."""
    limits = limits or Limits()
    if isinstance(text, bytes):
        if len(text) > limits.max_bytes:
            raise YamlError(f"file is {len(text)} bytes; the limit is {limits.max_bytes}")
        text = decode_utf8(text)
    elif len(text.encode("utf-8", "surrogatepass")) > limits.max_bytes:
        raise YamlError(f"document is larger than {limits.max_bytes} bytes")
    loader_cls = type("_BoundedLoader", (_Loader,), {"limits": limits})
    loader: _Loader | None = None
    try:
        loader = loader_cls(text)
        node = loader.get_single_node()
        if node is None:
            return None
        nodes, depth = expanded_shape(node, limits.max_nodes)
        if nodes > limits.max_nodes:
            raise YamlError(
                f"{_where(node.start_mark)}the document expands (aliases included) to more "
                f"than {limits.max_nodes} nodes"
            )
        if depth > limits.max_depth:
            raise YamlError(
                f"{_where(node.start_mark)}aliases nest the document deeper than "
                f"{limits.max_depth} levels"
            )
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise YamlError(f"{_where(mark)}invalid YAML: {exc.problem or exc.context}") from None
    except yaml.reader.ReaderError as exc:
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        before = text[: exc.position]
        line, column = before.count("\n") + 1, exc.position - (before.rfind("\n") + 1) + 1
        raise YamlError(
            f"line {line}, column {column}: invalid YAML: unacceptable character #x{char:04x}"
        ) from None
    except yaml.YAMLError as exc:
        raise YamlError(f"invalid YAML: {exc}") from None
    except RecursionError:
        raise YamlError(f"nested deeper than {limits.max_depth} levels") from None
    finally:
        if loader is not None:
            loader.dispose()
