"""consul-template's function library through Go-syntax templates (docs' examples and edge cases)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from templates.dependencies import (
    datacenters_dep,
    file_dep,
    parse_kv_get,
    parse_kv_list,
    parse_node,
    parse_nodes,
    parse_service,
    parse_services,
)
from templates.errors import TemplateExecError
from templates.functions import MISSING, MemoryDataSource, RenderContext, fn_indent, snake_case
from templates.render import Template

from .helpers import go, health_entry, kv_entry, source

CONFIG_TREE = [
    kv_entry("config/admin/port", "1234"),
    kv_entry("config/maxconns", "5"),
    kv_entry("config/minconns", "2"),
]


def web_source() -> MemoryDataSource:
    return source(
        {
            parse_service("web"): [
                health_entry("web01", "10.5.2.45", 2492, tags=["prod", "v1"], meta={"environment": "prod"}),
                health_entry(
                    "web02", "10.2.6.61", 2904, tags=["prod"], meta={"environment": "dev", "shard": "2"}
                ),
            ],
            parse_services(): {"web": ["prod", "v1"], "db": ["primary"]},
        }
    )


# --------------------------------------------------------------------------------------------
# Consul data functions


def test_service_docs_example() -> None:
    out = go(
        '{{ range service "web" }}\nserver {{ .Name }} {{ .Address }}:{{ .Port }}{{ end }}', web_source()
    )
    assert out == "\nserver web 10.5.2.45:2492\nserver web 10.2.6.61:2904"


def test_service_second_argument_is_the_filter() -> None:
    src = web_source()
    src.set_response(parse_service("web|any"), [health_entry("x", "1.1.1.1", 1)])
    assert go('{{ range service "web" "any" }}{{ .Node }}{{ end }}', src) == "x"


def test_services_docs_example() -> None:
    out = go('{{ range services }}{{ .Name }}: {{ .Tags | join "," }}\n{{ end }}', web_source())
    assert out == "db: primary\nweb: prod,v1\n"


def test_by_tag() -> None:
    text = '{{ range $tag, $services := service "web" | byTag }}{{ $tag }}:{{ range $services }} {{ .Node }}{{ end }}\n{{ end }}'
    assert go(text, web_source()) == "prod: web01 web02\nv1: web01\n"


def test_by_meta() -> None:
    src = web_source()
    out = go(
        '{{ range $k, $v := service "web" | byMeta "environment,shard|int" }}{{ $k }}={{ len $v }} {{ end }}',
        src,
    )
    assert out == "dev_00002=1 prod_00000=1 "
    out = go('{{ range $k, $v := service "web" | byMeta "shard" }}{{ $k }} {{ end }}', src)
    assert out == "2 _no_shard_ "


def test_key_blocks_until_present() -> None:
    tmpl = Template('maxconns {{ key "service/redis/maxconns" }}')
    src = MemoryDataSource()
    r = tmpl.render(src)
    assert not r.complete and r.text == "maxconns "
    dep = parse_kv_get("service/redis/maxconns", block=True)
    src.set_response(dep, None)  # 404: key absent → still waiting (consul-template blocks)
    assert not tmpl.render(src).complete
    src.set_response(dep, [kv_entry("service/redis/maxconns", "15")])
    r = tmpl.render(src)
    assert r.complete and r.text == "maxconns 15"


def test_key_exists_and_key_or_default() -> None:
    tmpl = Template('{{ keyExists "a" }} {{ keyOrDefault "b" "5" }} {{ keyOrDefault "c" "d" }}')
    src = MemoryDataSource()
    r = tmpl.render(src)
    assert r.text == "false 5 d" and not r.complete  # first pass: always the default
    src.set_response(parse_kv_get("a"), [kv_entry("a", "x")])
    src.set_response(parse_kv_get("b"), [kv_entry("b", "15")])
    src.set_response(parse_kv_get("c"), [kv_entry("c", "")])  # empty value → default
    r = tmpl.render(src)
    assert r.text == "true 15 d" and r.complete


def test_ls_and_tree() -> None:
    src = source(
        {
            parse_kv_list("service/redis"): [
                kv_entry("service/redis/", None),
                kv_entry("service/redis/maxconns", "15"),
                kv_entry("service/redis/minconns", "5"),
                kv_entry("service/redis/nested/config/value", '"value"'),
                kv_entry("service/redis/folder/", None),
            ]
        }
    )
    assert (
        go('{{ range ls "service/redis" }}\n{{ .Key }}:{{ .Value }}{{ end }}', src)
        == "\nmaxconns:15\nminconns:5"
    )
    out = go('{{ range tree "service/redis" }}{{ .Key }} {{ .Value }}\n{{ end }}', src)
    assert out == 'maxconns 15\nminconns 5\nnested/config/value "value"\n'


def test_safe_ls_refuses_empty_prefix() -> None:
    src = source({parse_kv_list("keys"): []})
    assert Template('{{ range ls "keys" }}{{ . }}{{ end }}').render(src).complete
    r = Template('{{ range safeLs "keys" }}{{ . }}{{ end }}').render(src)
    assert not r.complete and r.missing == {parse_kv_list("keys")}
    assert not Template('{{ range safeTree "keys" }}{{ . }}{{ end }}').render(src).complete


def test_by_key_docs_example() -> None:
    src = source(
        {
            parse_kv_list("groups"): [
                kv_entry("groups/elasticsearch/es1", "1"),
                kv_entry("groups/elasticsearch/es2", "1"),
                kv_entry("groups/top", "dropped"),
            ]
        }
    )
    text = '{{ range $key, $pairs := tree "groups" | byKey }}{{ $key }}:\n{{ range $pair := $pairs }}  {{ .Key }}={{ .Value }}\n{{ end }}{{ end }}'
    assert go(text, src) == "elasticsearch:\n  es1=1\n  es2=1\n"


def test_explode_to_json_yaml() -> None:
    src = source({parse_kv_list("config"): CONFIG_TREE})
    assert (
        go('{{ tree "config" | explode | toJSON }}', src)
        == '{"admin":{"port":"1234"},"maxconns":"5","minconns":"2"}'
    )
    assert go('{{ tree "config" | explode | toJSONPretty }}', src) == (
        '{\n  "admin": {\n    "port": "1234"\n  },\n  "maxconns": "5",\n  "minconns": "2"\n}'
    )
    assert (
        go('{{ tree "config" | explode | toYAML }}', src)
        == 'admin:\n  port: "1234"\nmaxconns: "5"\nminconns: "2"'
    )
    assert go('{{ with tree "config" | explode }}{{ .admin.port }}{{ end }}', src) == "1234"
    assert go('{{ tree "config" | explode | toYAML | indent 4 }}', src).startswith("    admin:\n      port:")


def test_to_yaml_shapes() -> None:
    src = MemoryDataSource()
    text = '{{ "{\\"l\\":[1,\\"yes\\",{\\"a\\":null}],\\"s\\":\\"x: y\\",\\"m\\":\\"a\\\\nb\\",\\"e\\":{}}" | parseJSON | toYAML }}'
    assert go(text, src) == "e: {}\nl:\n- 1\n- \"yes\"\n- a: null\nm: |-\n  a\n  b\ns: 'x: y'"


def test_nodes_node_datacenters() -> None:
    src = source(
        {
            parse_nodes(): [{"Node": "b", "Address": "10.4.2.13"}, {"Node": "a", "Address": "10.46.2.5"}],
            parse_node("node1@dc2"): {"Node": {"Node": "node1", "Address": "10.4.2.6"}, "Services": {}},
            datacenters_dep(): ["dc2", "dc1"],
        }
    )
    assert go("{{ range nodes }}\n{{ .Address }}{{ end }}", src) == "\n10.46.2.5\n10.4.2.13"
    assert go('{{ with node "node1@dc2" }}{{ .Node.Address }}{{ end }}', src) == "10.4.2.6"
    assert go("{{ range datacenters }}{{ . }} {{ end }}", src) == "dc1 dc2 "
    r = Template("{{ with node }}{{ .Node.Address }}{{ end }}").render(src)
    assert not r.complete and r.missing == {parse_node("")}


def test_file_and_sandbox(tmp_path: Path) -> None:
    f = tmp_path / "motd"
    f.write_text("hello\n")
    assert go(f'{{{{ file "{f}" | trimSpace }}}}') == "hello"
    r = Template(f'{{{{ file "{f}" }}}}').render(MemoryDataSource())
    assert r.dependencies == {file_dep(str(f))}
    with pytest.raises(TemplateExecError, match="outside of sandbox"):
        Template('{{ file "/etc/hostname" }}', sandbox_path=str(tmp_path)).render(MemoryDataSource())
    missing = Template(f'{{{{ file "{tmp_path / "nope"}" }}}}').render(MemoryDataSource())
    assert not missing.complete


def test_env_functions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTK_T_SET", "v")
    monkeypatch.setenv("CTK_T_EMPTY", "")
    monkeypatch.delenv("CTK_T_UNSET", raising=False)
    out = go(
        '{{ env "CTK_T_SET" }}|{{ env "CTK_T_UNSET" }}|{{ envOrDefault "CTK_T_EMPTY" "d" }}|{{ envOrDefault "CTK_T_UNSET" "d" }}'
    )
    assert out == "v||| d".replace(" ", "")
    assert go('{{ or (env "CTK_T_UNSET") "12345" }}') == "12345"
    assert go('{{ env "X" }}', env={"X": "from-template-env"}) == "from-template-env"
    with pytest.raises(TemplateExecError, match="required environment variable CTK_T_EMPTY is empty"):
        go('{{ mustEnv "CTK_T_EMPTY" }}')


def test_scratch() -> None:
    text = (
        '{{ scratch.Set "a" 1 }}{{ scratch.SetX "a" 2 }}{{ scratch.Get "a" }} {{ scratch.Key "a" }} {{ scratch.Key "b" }} '
        '{{ scratch.MapSet "m" "z" "last" }}{{ scratch.MapSet "m" "a" "first" }}{{ scratch.MapSetX "m" "a" "x" }}'
        '{{ scratch.MapValues "m" }} {{ scratch.Get "nope" }}'
    )
    assert go(text) == "1 true false [first last] <no value>"


def test_loop() -> None:
    assert go("{{ range $i := loop 5 8 }}\nstanza-{{ $i }}{{ end }}") == "\nstanza-5\nstanza-6\nstanza-7"
    assert go('{{ range loop 3 }}x{{ end }}{{ range loop "2" }}y{{ end }}') == "xxxyy"
    with pytest.raises(TemplateExecError, match="iterate over more than one variable"):
        go("{{ range $i, $e := loop 3 }}{{ end }}")


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ('{{ "a,b,c" | split "," | join "-" }}', "a-b-c"),
        ('{{ "  \\n" | split "," | len }}', "0"),
        ('{{ "foo.bar" | replaceAll "." "_" }}', "foo_bar"),
        ('{{ if "foo.bar" | regexMatch "foo([.a-z]+)" }}y{{ end }}', "y"),
        ('{{ "foo.bar" | regexReplaceAll "foo([.a-z]+)" "$1" }}', ".bar"),
        ('{{ "a1b22" | regexReplaceAll "(?P<d>[0-9]+)" "<${d}>" }}', "a<1>b<22>"),
        (
            '{{ "true" | parseBool }} {{ "" | parseBool }} {{ "42" | parseInt }} {{ "1.25" | parseFloat }}',
            "true false 42 1.25",
        ),
        ('{{ "7" | parseUint }} {{ "" | parseInt }}', "7 0"),
        (
            '{{ with $d := "{\\"name\\":\\"x\\",\\"n\\":8080}" | parseJSON }}{{ $d.name }} {{ $d.n }}{{ end }}',
            "x 8080",
        ),
        ('{{ "" | parseJSON }}', "map[]"),
        (
            '{{ "Hello World" | toLower }} {{ "hi" | toUpper }} {{ "hello wide-world o\'neil" | toTitle }}',
            "hello world HI Hello Wide-World O'neil",
        ),
        (
            '{{ "  x \\t" | trimSpace }}|{{ "xxhixx" | trim "x" }}|{{ "prefix-a" | trimPrefix "prefix-" }}|{{ "a.conf" | trimSuffix ".conf" }}',
            "x|hi|a|a",
        ),
        ('{{ .Tags | contains "prod" }}', "false"),  # nil dot: Go's in() sees nil
        (
            '{{ "hello" | base64Encode }} {{ "aGVsbG8=" | base64Decode }} {{ "hello" | base64URLEncode }}',
            "aGVsbG8= hello aGVsbG8=",
        ),
        ('{{ "bladibla" | sha256Hex }}', "54cf4c66bcabb5c20e25331c01dd600b73369e97a947861bd8d3a0e0b8b3d70b"),
        ('{{ "x" | md5sum }}', "9dd4e461268c8034f5c8564e155c67a6"),
        ('{{ $m := "a=1,b=2,bad" | splitToMap "," "=" }}{{ $m.a }}{{ $m.b }} {{ len $m }}', "12 2"),
        ("{{ add 1 2 }} {{ 1 | add 2 }} {{ subtract 2 5 }} {{ 5 | subtract 2 }}", "3 3 3 3"),
        ("{{ multiply 2 2 }} {{ divide 2 10 }} {{ 10 | divide 2 }} {{ 7 | divide 2.0 }}", "4 5 5 3.5"),
        ("{{ modulo 2 5 }} {{ -7 | divide 2 }} {{ -7 | modulo 3 }}", "1 -3 -1"),
        ("{{ minimum 2 5 }} {{ 5 | maximum 2 }} {{ maximum 1.5 1 }}", "2 5 1.5"),
        (
            '{{ "a" | in (split "," "a,b") }} {{ in "team" "ea" }} {{ in (split "," "1") 1 }}',
            "true true false",
        ),
        (
            '{{ containsAll (split "," "a,b") (split "," "a,b,c") }} {{ containsAny (split "," "x,b") (split "," "a,b") }}',
            "true true",
        ),
        (
            '{{ containsNone (split "," "x") (split "," "a") }} {{ containsNotAll (split "," "a,x") (split "," "a") }}',
            "true true",
        ),
        ('{{ "a\\nb\\n\\nc" | indent 2 }}', "  a\n  b\n\n  c"),
        ('{{ "<x>" | toJSON }} {{ "<x>" | toUnescapedJSON }}', '"\\u003cx\\u003e" "<x>"'),
        ('{{ mergeMap ("{\\"a\\":1}" | parseJSON) ("{\\"a\\":2,\\"b\\":3}" | parseJSON) }}', "map[a:1 b:3]"),
        ('{{ mergeMapWithOverride ("{\\"a\\":1}" | parseJSON) ("{\\"a\\":2}" | parseJSON) }}', "map[a:2]"),
        (
            '{{ scratch.MapSet "e" "foo/bar" "a" }}{{ scratch.Get "e" | explodeMap | toJSON }}',
            '{"foo":{"bar":"a"}}',
        ),
    ],
)
def test_helpers(text: str, want: str) -> None:
    assert go(text) == want


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '{{ "x" | parseInt }}',
            'error calling parseInt: parseInt: strconv.ParseInt: parsing "x": invalid syntax',
        ),
        ('{{ "maybe" | parseBool }}', "strconv.ParseBool"),
        ('{{ "{" | parseJSON }}', "error calling parseJSON"),
        ('{{ "x" | add 1 }}', "add: unknown type"),
        ("{{ 1 | divide 0 }}", "integer divide by zero"),
        ('{{ -1 | indent "x" }}', "wrong type for value; expected int; got string"),
        ('{{ "s" | indent -1 }}', "indent value must be a positive integer"),
        ("{{ key }}", "wrong number of args for key: want 1 got 0"),
        ('{{ service "web|bogus" }}', "invalid filter"),
        ('{{ "x" | byTag }}', "byTag: wrong argument type string"),
    ],
)
def test_helper_errors(text: str, message: str) -> None:
    with pytest.raises(TemplateExecError) as e:
        go(text)
    assert message in str(e.value)


def test_timestamp() -> None:
    fixed = datetime(2024, 3, 5, 7, 8, 9, 123456, tzinfo=UTC)
    tmpl = Template(
        '{{ timestamp }}|{{ timestamp "2006-01-02" }}|{{ timestamp "unix" }}|{{ timestamp "Jan _2 15:04:05.000 MST" }}'
    )
    out = tmpl.render(MemoryDataSource(), now=lambda: fixed).text
    assert out == "2024-03-05T07:08:09Z|2024-03-05|1709622489|Mar  5 07:08:09.123 UTC"


def test_function_denylist() -> None:
    tmpl = Template('{{ env "HOME" }}', function_denylist=["env*"])
    with pytest.raises(TemplateExecError, match="function is disabled"):
        tmpl.render(MemoryDataSource())
    j = Template('{{ "x" | to_upper }}{{ env("HOME") }}', syntax="jinja", function_denylist=["env"])
    with pytest.raises(TemplateExecError, match="error calling env: function is disabled"):
        j.render(MemoryDataSource())
    assert (
        Template('{{ "x" | toUpper }}', syntax="jinja", function_denylist=["env"])
        .render(MemoryDataSource())
        .text
        == "X"
    )


def test_data_source_protocol_basics() -> None:
    src = MemoryDataSource()
    dep = parse_service("web")
    ctx = RenderContext(src)
    assert ctx.recall(dep) is MISSING and dep in ctx.missing and dep in ctx.used
    src.set(dep, [])
    ctx2 = RenderContext(src)
    assert ctx2.recall(dep) == [] and not ctx2.missing
    src.delete(dep)
    assert src.get(dep) is MISSING


def test_snake_case_names() -> None:
    assert [
        snake_case(n) for n in ["keyOrDefault", "toJSONPretty", "base64URLDecode", "hmacSHA256Hex", "ls"]
    ] == [
        "key_or_default",
        "to_json_pretty",
        "base64_url_decode",
        "hmac_sha256_hex",
        "ls",
    ]


def test_indent_direct() -> None:
    assert fn_indent(4, "a\n") == "    a\n"
