"""``templates/config.py``: consul-template's HCL/JSON, ``-template`` specs, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from templates.config import (
    Config,
    ConfigError,
    TemplateConfig,
    WaitConfig,
    build_config,
    load_config_file,
    parse_duration,
    parse_hcl,
    parse_template_spec,
    parse_wait,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def src(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    p = tmp_path / "in.ctmpl"
    p.write_text('{{ key "k" }}')
    return p


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# ------------------------------------------------------------------------------ specs


def test_spec_splits_on_the_first_two_colons_only() -> None:
    t = parse_template_spec("in.ctmpl:out.conf:nginx -s reload && echo a:b:c")
    assert (t.source, t.destination, t.command) == ("in.ctmpl", "out.conf", "nginx -s reload && echo a:b:c")
    assert parse_template_spec("a:b").command is None
    assert parse_template_spec("a:b:").command is None
    # consul-template collapses "::" inside the command; ctk keeps it verbatim
    assert parse_template_spec("a:b:echo x::y").command == "echo x::y"


@pytest.mark.parametrize("spec", ["", "a", ":b", "a:", " :b"])
def test_spec_without_source_or_destination_is_one_line_error(spec: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_template_spec(spec)
    assert "\n" not in str(e.value) and "-template" in str(e.value)


# ------------------------------------------------------------------------------ durations / wait


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5s", 5.0), ("250ms", 0.25), ("1m30s", 90.0), ("1h", 3600.0), ("1.5s", 1.5), ("0", 0.0), (3, 3.0), ("2", 2.0)],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text, "f") == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["5x", "-1s", "s", "1s2", True, [1]])
def test_bad_durations_name_the_field(text: object) -> None:
    with pytest.raises(ConfigError, match=r"^wait\.min: "):
        parse_duration(text, "wait.min")


def test_wait_forms() -> None:
    assert parse_wait("5s", "w") == WaitConfig(5.0, 20.0)  # max defaults to 4×min
    assert parse_wait("2s:10s", "w") == WaitConfig(2.0, 10.0)
    assert parse_wait({"min": "1s", "max": "3s"}, "w") == WaitConfig(1.0, 3.0)
    assert parse_wait({"min": "1s"}, "w") == WaitConfig(1.0, 4.0)
    assert not parse_wait("0", "w").enabled
    with pytest.raises(ConfigError, match="min .* must not be greater than max"):
        parse_wait("10s:2s", "-wait")
    with pytest.raises(ConfigError, match=r"w\.mni: unknown field"):
        parse_wait({"mni": "1s"}, "w")


# ------------------------------------------------------------------------------ HCL


HCL = """
consul {
  address = "10.0.0.1:8500"
  token   = "secret"
}
max_stale = "10m"
block_query_wait = "30s"
wait {
  min = "2s"
  max = "10s"
}
template {
  source      = "in.ctmpl"
  destination = "a.conf"
  perms       = 0600
  command     = ["nginx", "-s", "reload"]
  command_timeout = "5s"
  wait { min = "1s" }
  check       = "nginx -t -c {staged}"
  backup      = true
}
template {
  contents        = "{{ key \\"x\\" }}"
  destination     = "b.conf"
  perms           = "0640"
  wait            = "3s:4s"
  left_delimiter  = "<%"
  right_delimiter = "%>"
  check           = "true"
  check_mode      = "after_swap"
  min_instances   = 2
  allow_empty     = false
  syntax          = "go"
  error_on_missing_key = true
  create_dest_dirs = false
}
"""


def test_hcl_file_with_two_template_blocks(tmp_path: Path, src: Path) -> None:
    path = write(tmp_path, "ct.hcl", HCL)
    cfg = build_config(config_paths=[path])
    assert cfg.consul_address == "10.0.0.1:8500" and cfg.token == "secret"
    assert cfg.max_stale_s == 600 and cfg.block_query_wait_s == 30
    assert cfg.wait == WaitConfig(2, 10)
    a, b = cfg.templates
    assert a == TemplateConfig(
        source="in.ctmpl", destination="a.conf", perms=0o600, command="nginx -s reload",
        command_timeout_s=5.0, wait=WaitConfig(1, 4), check="nginx -t -c {staged}", backup=True,
    )
    assert b.contents == '{{ key "x" }}' and b.perms == 0o640 and b.wait == WaitConfig(3, 4)
    assert b.delims() == ("<%", "%>") and b.check_mode == "after_swap"
    assert (b.min_instances, b.allow_empty, b.syntax) == (2, False, "go")
    assert b.error_on_missing_key and not b.create_dest_dirs
    assert cfg.wait_for(a) == WaitConfig(1, 4) and cfg.wait_for(b) == WaitConfig(3, 4)


def test_pyhcl_merge_bug_is_worked_around() -> None:
    # plain pyhcl merges repeated blocks key by key and drops the second block's values
    data = parse_hcl('template { source = "a" }\ntemplate { source = "b" }\ntemplate { source = "c" }', "x")
    assert [t["source"] for t in data["template"]] == ["a", "b", "c"]
    assert parse_hcl('template { source = "a" }', "x") == {"template": {"source": "a"}}


def test_json_config(tmp_path: Path, src: Path) -> None:
    path = write(tmp_path, "ct.json", json.dumps({
        "consul": {"address": "127.0.0.1:1"},
        "template": [{"source": "in.ctmpl", "destination": "o1", "perms": 420},
                     {"source": "in.ctmpl", "destination": "o2"}],
    }))
    cfg = build_config(config_paths=[path])
    assert [t.destination for t in cfg.templates] == ["o1", "o2"]
    assert cfg.templates[0].perms == 0o644  # JSON ints are decimal, as in Go


def test_global_wait_applies_unless_template_has_its_own(tmp_path: Path, src: Path) -> None:
    cfg = build_config(template_specs=["in.ctmpl:o"], overrides={"wait": WaitConfig(1, 2)})
    assert cfg.wait_for(cfg.templates[0]) == WaitConfig(1, 2)
    assert Config(templates=cfg.templates).wait_for(cfg.templates[0]) is None


def test_flags_beat_files_and_specs_are_appended(tmp_path: Path, src: Path) -> None:
    path = write(tmp_path, "c.hcl", 'consul { address = "file:1" }\nmax_stale = "9s"\n'
                                    'template {\n source = "in.ctmpl"\n destination = "f"\n}\n')
    cfg = build_config(config_paths=[path], template_specs=["in.ctmpl:cli"],
                       overrides={"consul_address": "flag:2", "max_stale_s": None})
    assert cfg.consul_address == "flag:2" and cfg.max_stale_s == 9
    assert [t.destination for t in cfg.templates] == ["f", "cli"]


def test_config_directory_is_read_in_lexical_order(tmp_path: Path, src: Path) -> None:
    d = tmp_path / "conf.d"
    d.mkdir()
    write(d, "20-b.hcl", 'max_stale = "2s"\ntemplate {\n source = "in.ctmpl"\n destination = "b"\n}\n')
    write(d, "10-a.hcl", 'max_stale = "1s"\ntemplate {\n source = "in.ctmpl"\n destination = "a"\n}\n')
    write(d, "README", "not config")
    cfg = build_config(config_paths=[d])
    assert [t.destination for t in cfg.templates] == ["a", "b"] and cfg.max_stale_s == 2


def test_known_but_unsupported_settings_are_warnings(tmp_path: Path, src: Path) -> None:
    path = write(tmp_path, "c.hcl", 'vault { address = "x" }\nconsul {\n retry { attempts = 3 }\n}\n'
                                    'template {\n source = "in.ctmpl"\n destination = "o"\n error_fatal = false\n}\n')
    cfg = build_config(config_paths=[path])
    text = "\n".join(cfg.warnings)
    assert "Vault is not supported" in text and "retries forever" in text and "error_fatal is ignored" in text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('template {\n source = "in.ctmpl"\n destination = "o"\n comand = "x"\n}\n',
         r"^c\.hcl: template\[1\]\.comand: unknown field \(did you mean command\?\)$"),
        ('template {\n source = "in.ctmpl"\n destination = "o"\n wait { min = "5x" }\n}\n',
         r"^c\.hcl: template\[1\]\.wait\.min: invalid duration '5x'"),
        ('template {\n source = "in.ctmpl"\n destination = "o"\n perms = 644\n}\n',
         r"^c\.hcl: template\[1\]\.perms: 644 reads as decimal"),
        ('template {\n source = "in.ctmpl"\n destination = "o"\n check_mode = "later"\n}\n',
         r"^c\.hcl: template\[1\]\.check_mode: want"),
        ('template {\n source = "in.ctmpl"\n destination = "o"\n min_instances = -1\n}\n',
         r"^c\.hcl: template\[1\]\.min_instances: must be at least 0"),
        ('template {\n source = "in.ctmpl"\n destination = "o"\n check = "nginx -t"\n}\n',
         r"^c\.hcl: template\[1\]\.check: must name the staged file"),
        ('template {\n source = "nope.ctmpl"\n destination = "o"\n}\n',
         r"^c\.hcl: template\[1\]\.source: nope\.ctmpl: no such file$"),
        ('template {\n destination = "o"\n}\n', r"^c\.hcl: template\[1\]\.source: missing"),
        ('template {\n source = "in.ctmpl"\n}\n', r"^c\.hcl: template\[1\]\.destination: missing$"),
        ('template {\n source = "in.ctmpl"\n destination = "o"\n}\ntemplate {\n source = "in.ctmpl"\n'
         ' destination = "o"\n}\n', r"^c\.hcl: template\[2\]\.destination: o is already the destination of "),
        ('templte {\n source = "x"\n}\n', r"^c\.hcl: templte: unknown field \(did you mean template\?\)$"),
        ('max_stale = "forever"\n', r"^c\.hcl: max_stale: invalid duration"),
        ('consul {\n adress = "x"\n}\n', r"^c\.hcl: consul\.adress: unknown field \(did you mean address\?\)$"),
        ('template {\n source = \n}\n', r"^c\.hcl: invalid HCL: Line \d+, column \d+: unexpected"),
        ("", r"^no templates"),
    ],
)
def test_bad_config_is_one_line_naming_file_and_field(tmp_path: Path, src: Path, text: str, expected: str) -> None:
    write(tmp_path, "c.hcl", text)
    with pytest.raises(ConfigError, match=expected) as e:
        build_config(config_paths=[Path("c.hcl")])
    assert "\n" not in str(e.value)


def test_missing_config_file(tmp_path: Path, src: Path) -> None:
    with pytest.raises(ConfigError, match=r"^nope\.hcl: no such file$"):
        build_config(config_paths=["nope.hcl"])


def test_dry_needs_no_destination(tmp_path: Path, src: Path) -> None:
    write(tmp_path, "c.hcl", 'template {\n source = "in.ctmpl"\n}\n')
    cfg = build_config(config_paths=["c.hcl"], overrides={"dry": True})
    assert cfg.templates[0].label() == "in.ctmpl"


def test_example_configs_parse() -> None:
    nginx = load_config_file(ROOT / "examples" / "nginx" / "ctk-template.hcl")
    (t,) = nginx["templates"]
    assert "{staged}" in t.check and t.command and t.min_instances == 1 and not t.allow_empty
    lvs = load_config_file(ROOT / "examples" / "lvs" / "ctk-template.hcl")
    assert [x.check for x in lvs["templates"]] == ["keepalived -t -f {staged}", "ipvsadm-check.py {staged}"]
