"""One strict YAML loader for configuration documents (docs/configuration-file.md#file-formats): ``yaml.SafeLoader``
without anchors and aliases, and without a key repeated in one mapping.

An alias is a reference, so a few hundred bytes of nested aliases ("billion laughs") stand for
gigabytes once anything walks, copies or stores the document; a configuration has no use for
them. They are refused as the parser meets the first one — before anything is built — with its
line and column. A repeated key is refused because the last one would silently win.
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["loads"]


class _StrictLoader(yaml.SafeLoader):
    """See the module's docstring. Keys brought in by a ``<<`` merge (of a mapping written in
    place: there are no aliases) may still be overridden."""

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            what = f"alias *{event.anchor}" if isinstance(event, yaml.AliasEvent) else f"anchor &{event.anchor}"
            raise yaml.composer.ComposerError(
                None,
                None,
                f"YAML anchors and aliases are not accepted in a configuration file ({what})",
                event.start_mark,
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Mark] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    hash(key)
                except TypeError:
                    continue  # the base class reports unhashable keys
                if key in seen:
                    first = seen[key]
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"found duplicate key {key!r} (first at line {first.line + 1}, column {first.column + 1})",
                        key_node.start_mark,
                    )
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


_StrictLoader.add_constructor("tag:yaml.org,2002:map", _StrictLoader.construct_yaml_map)


def loads(text: str) -> Any:
    """Parse one YAML document; ``yaml.YAMLError`` (a ``MarkedYAMLError`` with the line and
    column where it can) on anything refused."""
    return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
