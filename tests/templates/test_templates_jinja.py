"""Jinja dialect: same functions, same data, same output as the equivalent Go template."""

from __future__ import annotations

import pytest

from templates.dependencies import parse_kv_get, parse_kv_list, parse_service, parse_services
from templates.errors import TemplateExecError
from templates.functions import MemoryDataSource
from templates.render import Template

from .helpers import go, health_entry, jinja, kv_entry, source


def data() -> MemoryDataSource:
    return source(
        {
            parse_services(): {"api": ["internal"], "web": ["prod", "v1"]},
            parse_service("api"): [],
            parse_service("web"): [
                health_entry("n1", "10.0.0.1", 80, tags=["prod", "v1"], meta={"weight": "3"}),
                health_entry("n2", "10.0.0.2", 81, tags=["prod"], service_address="172.16.0.2"),
            ],
            parse_kv_get("lb/maxconn", block=True): [kv_entry("lb/maxconn", "512")],
            parse_kv_list("config"): [
                kv_entry("config/admin/port", "1234"),
                kv_entry("config/maxconns", "5"),
                kv_entry("config/minconns", "2"),
            ],
        }
    )


PAIRS = [
    (
        "nginx-upstreams",
        """\
{{- range services }}{{ $name := .Name }}
upstream {{ $name }} {
{{- range service .Name }}
  server {{ .Address }}:{{ .Port }};
{{- else }}
  server 127.0.0.1:65535;
{{- end }}
}
{{- end }}
""",
        """\
{% for svc in services() %}

upstream {{ svc.Name }} {
{% for s in service(svc.Name) %}
  server {{ s.Address }}:{{ s.Port }};
{% else %}
  server 127.0.0.1:65535;
{% endfor %}
}
{%- endfor %}

""",
    ),
    (
        "fixture-shape",
        'upstream web {\n    ip_hash;\n    {{range service "web"}}server {{.Address}}:{{.Port}};\n    {{end}}\n}\n',
        'upstream web {\n    ip_hash;\n{% for s in service("web") %}\n    server {{ s.Address }}:{{ s.Port }};\n{% endfor %}\n    \n}\n',
    ),
    (
        "key-and-meta",
        '{{ range service "web" }}{{ .Node }} weight={{ or (index .ServiceMeta "weight") "1" }} max={{ key "lb/maxconn" }}\n{{ end }}',
        '{% for s in service("web") %}{{ s.Node }} weight={{ s.ServiceMeta.weight or "1" }} max={{ key("lb/maxconn") }}\n{% endfor %}',
    ),
    (
        "filters-and-pipes",
        '{{ range service "web" }}{{ .Tags | join "," }}|{{ .Tags | contains "v1" }}|{{ .Name | toUpper }}\n{{ end }}',
        '{% for s in service("web") %}{{ s.Tags | join(",") }}|{{ s.Tags | contains("v1") | lower }}|{{ s.Name | toUpper }}\n{% endfor %}',
    ),
    (
        "byTag",
        '{{ range $tag, $s := service "web" | byTag }}{{ $tag }}={{ len $s }};{{ end }}',
        '{% for tag, s in (service("web") | byTag).items() | sort %}{{ tag }}={{ s | length }};{% endfor %}',
    ),
    (
        "explode-json-yaml",
        '{{ tree "config" | explode | toJSON }}\n{{ tree "config" | explode | toYAML }}',
        '{{ tree("config") | explode | toJSON }}\n{{ tree("config") | explode | to_yaml }}',
    ),
    (
        "keyOrDefault-math",
        '{{ keyOrDefault "missing" "7" | parseInt | add 3 }} {{ 10 | divide 2 }}',
        '{{ key_or_default("missing", "7") | parse_int | add(3) }} {{ 10 | divide(2) }}',
    ),
]


@pytest.mark.parametrize(("go_text", "jinja_text"), [p[1:] for p in PAIRS], ids=[p[0] for p in PAIRS])
def test_parity(go_text: str, jinja_text: str) -> None:
    src = data()
    g = Template(go_text, syntax="go").render(src)
    j = Template(jinja_text, syntax="jinja").render(src)
    assert j.text == g.text
    assert j.dependencies == g.dependencies
    assert j.complete == g.complete


def test_discovery_and_completeness_match_go() -> None:
    go_t = Template('{{ key "a" }}{{ range service "web" }}{{ end }}{{ range service "api" }}{{ end }}')
    j_t = Template(
        '{{ key("a") }}{% for s in service("web") %}{% endfor %}{% for s in service("api") %}{% endfor %}'
    )
    src = MemoryDataSource()
    g, j = go_t.render(src), j_t.render(src)
    assert j.syntax == "jinja" and g.syntax == "go"
    assert (
        j.missing == g.missing == {parse_kv_get("a", block=True), parse_service("web"), parse_service("api")}
    )
    src.set_response(parse_kv_get("a", block=True), [kv_entry("a", "x")])
    src.set_response(parse_service("web"), [])
    src.set_response(parse_service("api"), [])
    assert go_t.render(src).complete and j_t.render(src).complete


def test_snake_case_aliases_and_keyword_names() -> None:
    src = data()
    assert jinja('{{ key_or_default("x", "d") }}{{ keyOrDefault("x", "d") }}', src) == "dd"
    assert jinja('{{ in_(["a"], "a") }} {{ "a" | in_(["a", "b"]) }}', src) == "True True"
    assert jinja('{{ safe_ls("config") | length }}', src) == "2"


def test_builtin_filters_still_work_the_jinja_way() -> None:
    src = data()
    assert jinja('{{ ["a", "b"] | join }}|{{ ["a", "b"] | join("-") }}', src) == "ab|a-b"
    assert jinja('{{ "a\\nb" | indent(2) }}', src) == "  a\n  b"  # ctk: first line too (Go semantics)
    assert jinja('{{ "a\\nb" | indent(2, first=False) }}', src) == "a\n  b"  # Jinja's own
    assert jinja('{{ "  x  " | trim }}|{{ "xxhixx" | trim("x") }}', src) == "x|hi"


def test_jinja_idioms_mix_with_ctk_functions() -> None:
    src = data()
    assert jinja('{{ services() | map(attribute="Name") | join(",") }}', src) == "api,web"
    macro = (
        '{% macro up(n) %}{% for s in service(n) %}{{ s.Node }} {% endfor %}{% endmacro %}[{{ up("web") }}]'
    )
    assert jinja(macro, src) == "[n1 n2 ]"
    assert (
        jinja('{{ service("web") | selectattr("Port", "gt", 80) | map(attribute="Node") | join }}', src)
        == "n2"
    )


def test_scratch_and_loop_in_jinja() -> None:
    out = jinja('{{ scratch.Set("k", 2) }}{{ scratch.get("k") }}{% for i in loop(2, 4) %}{{ i }}{% endfor %}')
    assert out == "223"


def test_parse_json_keeps_ints_in_jinja() -> None:
    assert jinja('{{ ("{\\"port\\": 8080}" | parseJSON).port }}') == "8080"
    assert go('{{ ("{\\"port\\": 1000000}" | parseJSON).port }}') == "1e+06"  # Go decodes float64


def test_trim_blocks_defaults() -> None:
    text = "a\n{% if true %}\n  b\n{% endif %}\nc\n"
    assert jinja(text) == "a\n  b\nc\n"
    assert jinja(text, trim_blocks=False, lstrip_blocks=False) == "a\n\n  b\n\nc\n"


def test_errors_are_template_errors() -> None:
    with pytest.raises(TemplateExecError, match="error calling parseInt"):
        jinja('{{ "x" | parseInt }}')
    with pytest.raises(TemplateExecError):
        jinja("{{ nope.attr }}", error_on_missing_key=True)
    assert jinja("[{{ nope }}]") == "[]"
