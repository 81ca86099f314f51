"""The skill prompt template engine: what it renders, and what it refuses (missing data, code, objects)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.skills import Template, TemplateError, render


def test_template_renders_values_fields_and_indexes() -> None:
    context = {"name": "aigw", "pr": {"number": 7, "files": ["a.py", "b.py"]}}
    assert render("{{ name }} #{{pr.number}} first={{ pr.files.0 }}", context) == "aigw #7 first=a.py"


def test_template_renders_non_strings_as_compact_json() -> None:
    context = {"n": 3, "x": 1.5, "ok": True, "none": None, "obj": {"a": [1, "é"]}, "list": [1, 2]}
    out = render("{{ n }} {{ x }} {{ ok }} {{ none }} {{ obj }} {{ list }}", context)
    assert out == '3 1.5 true null {"a":[1,"é"]} [1,2]'


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (True, "yes"),
        (False, "no"),
        (None, "no"),
        ("", "no"),
        ("x", "yes"),
        ([], "no"),
        ([0], "yes"),
        (0, "no"),
    ],
)
def test_template_if_uses_json_truthiness(value: object, shown: str) -> None:
    assert render("{{#if v}}yes{{else}}no{{/if}}", {"v": value}) == shown


def test_template_each_gives_this_fields_and_index() -> None:
    source = "{{#each flags}}{{ @index }}:{{ this.id }}={{ this.text }};{{/each}}"
    context = {"flags": [{"id": "a", "text": "x"}, {"id": "b", "text": "y"}]}
    assert render(source, context) == "0:a=x;1:b=y;"


def test_template_each_else_renders_for_an_empty_or_null_list() -> None:
    source = "{{#each items}}- {{ this }}{{else}}nothing{{/each}}"
    assert render(source, {"items": []}) == "nothing"
    assert render(source, {"items": None}) == "nothing"


def test_template_nested_each_reads_the_innermost_item_and_the_root() -> None:
    source = "{{#each groups}}{{#each this.members}}{{ this }}@{{ team }} {{/each}}{{/each}}"
    context = {"team": "core", "groups": [{"members": ["ann", "bo"]}, {"members": ["cy"]}]}
    assert render(source, context) == "ann@core bo@core cy@core "


def test_template_block_tags_alone_on_a_line_leave_no_blank_lines() -> None:
    source = "Flags:\n{{#each flags}}\n- {{ this }}\n{{/each}}\n{{#if note}}\nNote: {{ note }}\n{{/if}}\nend"
    assert render(source, {"flags": ["a", "b"], "note": ""}) == "Flags:\n- a\n- b\nend"


def test_template_inline_blocks_keep_their_line() -> None:
    assert render("a {{#if x}}X{{/if}} b\n", {"x": True}) == "a X b\n"


def test_template_missing_variable_is_an_error_naming_it_and_the_line() -> None:
    with pytest.raises(TemplateError) as caught:
        Template("line one\nline two {{ tilte }}", first_line=40).render({"title": "t"})
    assert caught.value.line == 41
    assert "missing variable 'tilte'" in str(caught.value)


def test_template_missing_field_names_the_dotted_path() -> None:
    with pytest.raises(TemplateError, match=r"missing variable 'scan\.filez'"):
        render("{{ scan.filez }}", {"scan": {"files": []}})
    with pytest.raises(TemplateError, match="missing variable 'items.5'"):
        render("{{ items.5 }}", {"items": [1]})


def test_template_missing_variable_in_if_is_an_error_not_false() -> None:
    with pytest.raises(TemplateError, match="missing variable 'flag'"):
        render("{{#if flag}}x{{/if}}", {})


def test_template_never_reaches_python_attributes_or_objects() -> None:
    with pytest.raises(TemplateError, match="missing variable 'name.__class__'"):
        render("{{ name.__class__ }}", {"name": {"a": 1}})
    with pytest.raises(TemplateError, match="cannot read field 'upper' of a string"):
        render("{{ name.upper }}", {"name": "x"})
    with pytest.raises(TemplateError, match="not a JSON value"):
        render("{{ path }}", {"path": Path("/etc")})


@pytest.mark.parametrize(
    "source",
    [
        "{{ name | upper }}",
        "{{ name() }}",
        "{{ __import__('os').system('id') }}",
        "{{ a + b }}",
        "{{#with x}}{{/with}}",
        "{{> partial }}",
    ],
)
def test_template_refuses_anything_but_its_few_tags(source: str) -> None:
    with pytest.raises(TemplateError, match="unsupported tag"):
        Template(source)


@pytest.mark.parametrize(
    ("source", "message", "line"),
    [
        ("a\n{{#if x}}\nb", r"\{\{#if\}\} is never closed", 2),
        ("{{/each}}", "without an open", 1),
        ("{{#each a}}\n{{/if}}", r"where \{\{/each\}\} was expected", 2),
        ("{{else}}", "outside an", 1),
        ("{{#if a}}{{else}}{{else}}{{/if}}", "twice", 1),
        ("ok\n{{ this }}", "outside an", 2),
        ("x\ny {{ open", "without a matching", 2),
    ],
)
def test_template_syntax_errors_name_the_line(source: str, message: str, line: int) -> None:
    with pytest.raises(TemplateError, match=message) as caught:
        Template(source)
    assert caught.value.line == line


def test_template_each_needs_a_list() -> None:
    with pytest.raises(TemplateError, match="needs a list, got string"):
        render("{{#each s}}{{/each}}", {"s": "abc"})


def test_template_escaped_braces_are_literal() -> None:
    assert render(r"\{{ not a tag }} {{ x }}", {"x": 1}) == "{{ not a tag }} 1"


def test_template_lists_the_top_level_names_it_reads() -> None:
    template = Template("{{ a.b }}{{#if c}}{{#each d}}{{ this.e }}{{ @index }}{{/each}}{{/if}}")
    assert template.variables() == {"a", "c", "d"}
