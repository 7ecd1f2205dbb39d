"""render(): the shared fixture byte for byte, n-pass dependency discovery, dialect detection."""

from __future__ import annotations

from pathlib import Path

import pytest

from templates.dependencies import parse_kv_get, parse_kv_list, parse_service, parse_services
from templates.errors import TemplateExecError, TemplateSyntaxError
from templates.functions import MemoryDataSource
from templates.render import RenderResult, Template, detect_syntax, render

from .helpers import health_entry, kv_entry, source

FIXTURE = Path("/work/shared/fixtures/templates/test-upstream.ctmpl")
if not FIXTURE.exists():  # a checkout without the shared folder: use the same bytes
    FIXTURE_TEXT = (
        "upstream test-cluster {\n    ip_hash;\n"
        '    {{range service "test"}}server {{.Address}}:{{.Port}};\n    {{end}}\n}\n'
    )
else:
    FIXTURE_TEXT = FIXTURE.read_text()


# --------------------------------------------------------------------------------------------
# The fixture, as consul-template renders it


def fixture_render(instances: list[tuple[str, str, int]]) -> RenderResult:
    src = source(
        {
            parse_service("test"): [
                health_entry(node, addr, port, service="test") for node, addr, port in instances
            ]
        }
    )
    return render(FIXTURE_TEXT, src, path="test-upstream.ctmpl")


def test_fixture_bytes_are_what_we_expect() -> None:
    assert FIXTURE_TEXT.endswith("    {{end}}\n}\n")


def test_fixture_zero_instances() -> None:
    r = fixture_render([])
    assert r.complete
    # The range body never runs: the 4 spaces before {{range}} and the newline after {{end}} stay.
    assert r.text == "upstream test-cluster {\n    ip_hash;\n    \n}\n"


def test_fixture_one_instance() -> None:
    r = fixture_render([("n1", "10.0.0.1", 8080)])
    assert r.text == "upstream test-cluster {\n    ip_hash;\n    server 10.0.0.1:8080;\n    \n}\n"


def test_fixture_two_instances_sorted_by_node() -> None:
    r = fixture_render([("n2", "10.0.0.2", 8081), ("n1", "10.0.0.1", 8080)])
    assert r.text == (
        "upstream test-cluster {\n    ip_hash;\n    server 10.0.0.1:8080;\n    server 10.0.0.2:8081;\n    \n}\n"
    )


def test_fixture_before_data_is_incomplete() -> None:
    r = render(FIXTURE_TEXT, MemoryDataSource(), path="test-upstream.ctmpl")
    assert not r.complete
    assert r.dependencies == r.missing == {parse_service("test")}
    assert r.waiting_on() == ["health.service(test|passing)"]


def test_fixture_uses_service_address_over_node_address() -> None:
    src = source(
        {
            parse_service("test"): [
                health_entry("n1", "10.0.0.1", 80, service="test", service_address="172.16.0.9")
            ]
        }
    )
    assert "server 172.16.0.9:80;" in render(FIXTURE_TEXT, src).text


# --------------------------------------------------------------------------------------------
# Dependency discovery


TWO_SERVICES_AND_A_KEY = """\
{{ $max := key "lb/maxconn" }}
{{- range service "web" }}web {{ .Address }} maxconn {{ $max }}
{{ end -}}
{{ range service "api" }}api {{ .Address }}
{{ end }}"""


def test_one_pass_discovers_every_dependency() -> None:
    tmpl = Template(TWO_SERVICES_AND_A_KEY)
    src = MemoryDataSource()
    r = tmpl.render(src)
    want = {parse_kv_get("lb/maxconn", block=True), parse_service("web"), parse_service("api")}
    assert r.dependencies == want
    assert r.missing == want
    assert not r.complete

    src.set_response(parse_service("web"), [health_entry("n1", "10.0.0.1", 80)])
    src.set_response(parse_service("api"), [health_entry("n2", "10.0.0.2", 90, service="api")])
    r = tmpl.render(src)
    assert r.missing == {parse_kv_get("lb/maxconn", block=True)} and not r.complete

    src.set_response(parse_kv_get("lb/maxconn", block=True), [kv_entry("lb/maxconn", "512")])
    r = tmpl.render(src)
    assert r.complete and not r.missing
    assert r.text == "web 10.0.0.1 maxconn 512\napi 10.0.0.2\n"


def test_nested_lookups_need_one_pass_per_level() -> None:
    tmpl = Template(
        "{{ range services }}{{ range service .Name }}{{ .Name }}={{ .Address }} {{ end }}{{ end }}"
    )
    src = MemoryDataSource()
    assert tmpl.render(src).dependencies == {parse_services()}
    src.set_response(parse_services(), {"api": [], "web": []})
    r = tmpl.render(src)
    assert r.missing == {parse_service("api"), parse_service("web")}
    src.set_response(parse_service("api"), [health_entry("a", "10.0.0.3", 1, service="api")])
    src.set_response(parse_service("web"), [health_entry("w", "10.0.0.4", 2)])
    r = tmpl.render(src)
    assert r.complete and r.text == "api=10.0.0.3 web=10.0.0.4 "
    assert len(r.dependencies) == 3


def test_key_of_key_needs_two_passes() -> None:
    tmpl = Template('{{ key (key "pointer") }}')
    src = MemoryDataSource()
    assert tmpl.render(src).dependencies == {parse_kv_get("pointer", block=True)}
    src.set_response(parse_kv_get("pointer", block=True), [kv_entry("pointer", "target")])
    assert tmpl.render(src).missing == {parse_kv_get("target", block=True)}
    src.set_response(parse_kv_get("target", block=True), [kv_entry("target", "value")])
    assert tmpl.render(src).text == "value"


def test_missing_data_never_fails_even_with_index() -> None:
    # index on the empty first-pass list would fail; `with` guards it, as the README advises
    r = render(
        '{{ with service "web" }}{{ with index . 0 }}{{ .Address }}{{ end }}{{ end }}', MemoryDataSource()
    )
    assert r.text == "" and not r.complete
    with pytest.raises(TemplateExecError, match="index out of range: 0"):
        render('{{ (index (service "web") 0).Address }}', MemoryDataSource())


def test_dependencies_shared_between_functions() -> None:
    r = render('{{ ls "a" }}{{ tree "a" }}{{ keyExists "k" }}{{ keyOrDefault "k" "" }}', MemoryDataSource())
    assert r.dependencies == {parse_kv_list("a"), parse_kv_get("k")}


# --------------------------------------------------------------------------------------------
# Real-world templates


def test_nginx_upstreams_with_fallback() -> None:
    text = """\
{{- range services }}{{ $name := .Name }}{{ $service := service .Name }}
upstream {{ $name }} {
  zone upstream-{{ $name }} 64k;
  {{- range $service }}
  server {{ .Address }}:{{ .Port }} max_fails=3 fail_timeout=60 weight=1;
  {{- else }}
  server 127.0.0.1:65535; # force a 502
  {{- end }}
}
{{- end }}
"""
    src = source(
        {
            parse_services(): {"api": [], "web": ["prod"]},
            parse_service("api"): [],
            parse_service("web"): [health_entry("n1", "10.0.0.1", 80), health_entry("n2", "10.0.0.2", 80)],
        }
    )
    r = render(text, src)
    assert r.complete
    assert r.text == (
        "\nupstream api {\n  zone upstream-api 64k;\n  server 127.0.0.1:65535; # force a 502\n}"
        "\nupstream web {\n  zone upstream-web 64k;"
        "\n  server 10.0.0.1:80 max_fails=3 fail_timeout=60 weight=1;"
        "\n  server 10.0.0.2:80 max_fails=3 fail_timeout=60 weight=1;\n}\n"
    )


def test_haproxy_example() -> None:
    text = """\
global
    maxconn {{ key "service/haproxy/maxconn" }}

defaults
    mode {{ key "service/haproxy/mode" }}{{ range ls "service/haproxy/timeouts" }}
    timeout {{ .Key }} {{ .Value }}{{ end }}

listen http-in
    bind *:8000{{ range service "release.web" }}
    server {{ .Node }} {{ .Address }}:{{ .Port }}{{ end }}
"""
    src = source(
        {
            parse_kv_get("service/haproxy/maxconn", block=True): [
                kv_entry("service/haproxy/maxconn", "4096")
            ],
            parse_kv_get("service/haproxy/mode", block=True): [kv_entry("service/haproxy/mode", "http")],
            parse_kv_list("service/haproxy/timeouts"): [
                kv_entry("service/haproxy/timeouts/connect", "5000"),
                kv_entry("service/haproxy/timeouts/client", "50000"),
            ],
            parse_service("release.web"): [health_entry("web1", "10.0.0.5", 8080, tags=["release"])],
        }
    )
    assert render(text, src).text == (
        "global\n    maxconn 4096\n\ndefaults\n    mode http\n    timeout connect 5000\n    timeout client 50000\n\n"
        "listen http-in\n    bind *:8000\n    server web1 10.0.0.5:8080\n"
    )


def test_keepalived_weights_from_meta() -> None:
    text = """\
virtual_server 10.0.0.100 80 {
    lb_algo wrr
{{- range service "web" }}
    real_server {{ .Address }} {{ .Port }} {
        weight {{ or (index .ServiceMeta "weight") "1" }}
    }
{{- end }}
}
"""
    src = source(
        {
            parse_service("web"): [
                health_entry("n1", "10.0.0.1", 80, meta={"weight": "3"}),
                health_entry("n2", "10.0.0.2", 80),
            ]
        }
    )
    out = render(text, src).text
    assert "real_server 10.0.0.1 80 {\n        weight 3\n" in out
    assert "real_server 10.0.0.2 80 {\n        weight 1\n" in out


def test_error_on_missing_key() -> None:
    src = source({parse_service("web"): [health_entry("n1", "10.0.0.1", 80)]})
    assert render('{{ range service "web" }}[{{ .ServiceMeta.weight }}]{{ end }}', src).text == "[]"
    with pytest.raises(TemplateExecError, match='map has no entry for key "weight"'):
        render('{{ range service "web" }}{{ .ServiceMeta.weight }}{{ end }}', src, error_on_missing_key=True)


def test_custom_delims_via_render() -> None:
    src = source({parse_service("web"): [health_entry("n1", "10.0.0.1", 80)]})
    out = render('{{ literal }} <% range service "web" %><% .Node %><% end %>', src, delims=("<%", "%>"))
    assert out.text == "{{ literal }} n1"


# --------------------------------------------------------------------------------------------
# Dialect detection


@pytest.mark.parametrize(
    ("text", "path", "want"),
    [
        ("{{ x }}", "a.ctmpl", "go"),
        ("{% for x in y %}{% endfor %}", "a.tmpl", "go"),
        ("{{ .x }}", "nginx.conf.j2", "jinja"),
        ('{{ range service "web" }}{{ end }}', None, "go"),
        ("{{ .Address }}", None, "go"),
        ("{{- if . }}{{ end }}", None, "go"),
        ("{{/* c */}}", None, "go"),
        ("{{ $x := 1 }}", None, "go"),
        ("{% for s in service('web') %}{{ s.Address }}{% endfor %}", None, "jinja"),
        ("{# comment #}plain", None, "jinja"),
        ('{{ key "a" }}', None, "go"),
        ('{{ service("web") | length }}', None, "jinja"),
        ("{{ x.y }}", None, "jinja"),
        ("no template at all", None, "go"),
    ],
)
def test_detect_syntax(text: str, path: str | None, want: str) -> None:
    assert detect_syntax(text, path) == want


def test_detect_custom_delims_means_go() -> None:
    assert detect_syntax("<% .x %>", None, ("<%", "%>")) == "go"


def test_explicit_syntax_and_errors() -> None:
    with pytest.raises(TemplateSyntaxError, match=r"template: t:1: unexpected \{\{end\}\}"):
        Template("{{ end }}", syntax="go", name="t")
    with pytest.raises(TemplateSyntaxError):
        Template("{% for %}", syntax="jinja")
    with pytest.raises(ValueError):
        Template("x", syntax="php")  # type: ignore[arg-type]


def test_render_caches_compiled_templates() -> None:
    src = MemoryDataSource()
    a = render("{{ 1 }}", src)
    b = render("{{ 1 }}", src)
    assert a == b and a.text == "1" and a.complete and a.dependencies == frozenset()
