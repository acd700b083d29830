"""The one YAML reader for everything users write (run configs, rule files, policies): a regular
file of bounded size, UTF-8, PyYAML's safe loader with unique keys and aliases capped, every
problem one line naming the file.
"""
from pathlib import Path
from typing import Any

import yaml

from auditor.files import FileRefused, read_regular
from auditor.inputs.schema import InputError

MAX_FILE_BYTES = 1_000_000


MAX_YAML_NODES = 100_000   # values in a document with every alias expanded; a training config has hundreds


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing duplicate keys (which safe_load would silently take the last of)
    and documents whose aliases expand past MAX_YAML_NODES values.

    An alias is one shared object to the loader, so nine nested aliases of nine items (under 1 KB,
    "billion laughs") load at once, and then cost gigabytes in whatever walks them: validation, the
    count cache's JSON. The expanded size is computed on the node graph (each node once), before
    anything is built."""

    def construct_document(self, node):
        _check_expansion(node)
        return super().construct_document(node)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = (key_node.tag, key_node.value)
            if isinstance(key_node, yaml.ScalarNode) and key[0] != "tag:yaml.org,2002:merge":
                if key in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"found duplicate key {key[1]!r}",
                                                            key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep)


def _check_expansion(root) -> None:
    sizes: dict[int, int | None] = {}   # id(node) -> expanded size; None while being measured

    def size(node) -> int:
        key = id(node)
        if key in sizes:
            if sizes[key] is None:
                raise yaml.constructor.ConstructorError(None, None, "found a recursive alias (an anchor used "
                                                        "inside itself)", node.start_mark)
            return sizes[key]
        sizes[key] = None
        children = node.value if isinstance(node, yaml.SequenceNode) else \
            [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else ()
        total = 1
        for child in children:
            total += size(child)
            if total > MAX_YAML_NODES:
                raise yaml.constructor.ConstructorError(
                    None, None, f"over {MAX_YAML_NODES:_} values once its aliases are expanded (an alias bomb?)",
                    node.start_mark)
        sizes[key] = total
        return total

    size(root)


def read_yaml_file(path: str | Path, what: str, *, loader=None, error: type = None) -> Any:
    """The parsed YAML of a file of at most MAX_FILE_BYTES: a regular file, UTF-8, safe YAML with
    unique keys and bounded aliases. ``error`` (default InputError) is raised with one line naming
    the file; ``what`` says what was expected ('a YAML config')."""
    error = error or InputError
    path, source = Path(path), str(path)
    try:
        raw = read_regular(path, MAX_FILE_BYTES)
    except FileRefused as exc:
        raise error(f"{source}: the file {exc}; expected {what}", source=source) from None
    except OSError as exc:
        raise error(f"{source}: cannot read the file: {exc.strerror or exc}", source=source) from None
    return parse_yaml_text(raw, source, loader=loader, error=error)


def parse_yaml_text(text: str | bytes, source: str, *, loader=None, error: type = None) -> Any:
    """YAML text (or UTF-8 bytes) parsed with ``loader`` (default: unique keys, bounded aliases);
    ``error`` (default InputError) with one line for anything that is not valid YAML."""
    error, loader = error or InputError, loader or _UniqueKeyLoader

    def fail(message: str):
        return error(f"{source}: {message}", source=source)
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise fail(f"not UTF-8 text (byte 0x{text[exc.start]:02x} at offset {exc.start})") from None
    try:
        return yaml.load(text, Loader=loader)
    except yaml.MarkedYAMLError as exc:
        mark, problem = exc.problem_mark or exc.context_mark, exc.problem or exc.context or "unreadable"
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        if exc.context and problem.startswith("but "):          # "expected a single document ... but found another"
            problem = f"{exc.context}, {problem}"
        raise fail(f"not valid YAML{where}: {problem}") from None
    except yaml.reader.ReaderError as exc:
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise fail(f"not valid YAML (offset {exc.position}): U+{char:04X} is not allowed in YAML") from None
    except (yaml.YAMLError, ValueError, RecursionError) as exc:    # huge ints, deep nesting
        detail = "nested too deeply" if isinstance(exc, RecursionError) else " ".join(str(exc).split())
        raise fail(f"not valid YAML: {detail}") from None
