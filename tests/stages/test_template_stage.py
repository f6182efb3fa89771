"""The `template` stage: sandboxed Jinja2, run through real pipeline runs.

A pipeline file is data: a template in it must never run code, read internals, or exhaust memory
or CPU. Row values are data too: they come out as literal text, never rendered as templates.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jinja2
import pytest

from aigc_pipeline.engine import Engine
from aigc_pipeline.errors import PipelineFileError
from aigc_pipeline.records import ItemResult
from aigc_pipeline.testing import CPU_ONLY, FakeStages, run_text

COLUMNS = "{x: str, d: dict, n: int, features: 'list[str]', nums: 'list[int]', price: float}"
ROW: dict[str, Any] = {"x": "hi", "d": {"a": 1, "b": "two"}, "n": 3, "features": ["light", "small"],
                       "nums": [1, 2, 3], "price": 9.5}

# Strings that only appear when a template got at Python internals or ran a command. A reason may
# name the attribute a payload asked for ("access to attribute '__globals__' ... is unsafe"), but
# never show what is behind it.
SHOWN_INTERNALS = ("<class", "<function", "<built-in", "<module", "<bound", "<Template", "uid=", "0x")
TELLTALES = (*SHOWN_INTERNALS, "subclasses", "__globals__", "__builtins__", "popen", "cycler")


@pytest.fixture(scope="module")
def engine() -> Engine:
    engine = Engine()
    engine.register(FakeStages(), name="fakes")
    return engine


def pipeline(template: str, columns: str = COLUMNS, strip: bool | None = None) -> str:
    options = f", strip: {str(strip).lower()}" if strip is not None else ""
    stage = f"{{uses: template, with: {{template: {json.dumps(template)}{options}}}}}"
    return f"name: t\ninputs: {columns}\nstages:\n  ad: {stage}\n"


def render(engine: Engine, tmp_path: Path, template: str, rows: list[dict[str, Any]] | None = None,
           **options: Any) -> list[ItemResult]:
    return run_text(pipeline(template, **options), rows or [ROW], tmp_path / "out", engine, inventory=CPU_ONLY).results


def assert_no_leak(result: ItemResult) -> None:
    outputs, reason = json.dumps(result.outputs), (result.error or {}).get("reason", "")
    for telltale in TELLTALES:
        assert telltale not in outputs, f"{telltale!r} leaked: {outputs[:300]}"
    for telltale in SHOWN_INTERNALS:
        assert telltale not in reason, f"{telltale!r} leaked: {reason[:300]}"


# ----------------------------------------------------------------- templates in the pipeline file

SANDBOX = "template blocked by the sandbox"

# (payload, what the failed item's reason must contain)
BLOCKED = [
    ("{{ ''.__class__.__mro__[1].__subclasses__() }}", SANDBOX),
    ("{{ ().__class__.__base__.__subclasses__() }}", SANDBOX),
    ("{{ x.__class__.__mro__ }}", SANDBOX),
    ("{{ self.__init__.__globals__ }}", SANDBOX),
    ("{{ self._TemplateReference__context }}", SANDBOX),
    ("{{ self.__dict__ }}", SANDBOX),
    ("{{ ''|attr('__class__') }}", SANDBOX),
    ("{{ range.__globals__ }}", SANDBOX),
    ("{{ x.upper.__self__ }}", SANDBOX),
    ("{{ '{0.__class__}'.format(x) }}", SANDBOX),
    ("{{ '{0.__init__.__globals__}'.format(self) }}", SANDBOX),
    ("{{ '{a.__class__}'.format_map(d) }}", SANDBOX),
    ("{{ ('{0.__class__.__mro__}'|attr('format'))(x) }}", SANDBOX),  # CVE-2025-27516 shape
    ("{% set f = '{0.__class__}'.format %}{{ f(x) }}", SANDBOX),  # CVE-2024-56326 shape
    ("{{ '%s'|format(x.__class__) }}", SANDBOX),
    ("{{ '%s'|format(self.__init__) }}", SANDBOX),
    ("{{ x|attr('__class__')|attr('__mro__') }}", "__mro__"),
    ("{{ x.__dict__ }}", "__dict__"),
    ("{{ [].append(1) }}", SANDBOX),
    ("{{ features.append('x') }}", SANDBOX),
    ("{{ features.sort() }}", SANDBOX),
    ("{{ d.update({'a': 2}) }}", SANDBOX),
    ("{{ d.pop('a') }}", SANDBOX),
    ("{{ x.upper }}", SANDBOX),  # printing a method would show its address
    ("{{ x.upper ~ '' }}", SANDBOX),
    ("{{ x|map('upper') }}", SANDBOX),  # a generator's repr
    ("{{ ['{0.__class__}']|map(attribute='format')|list }}", SANDBOX),
    ("{% include 'x' %}", "no loader"),
    ("{% import 'os' as os %}", "no loader"),
    # memory
    ("{{ 'a' * 100000000 }}", SANDBOX),
    ("{% set s = 'a' * 100000 %}{{ [s] * 100000 }}", SANDBOX),
    ("{{ x.encode() * 1000000000 }}", SANDBOX),
    ("{% set a = 'a' * 100000 %}{% set a = a ~ a %}{% set a = a ~ a %}{% set a = a ~ a %}{% set a = a ~ a %}", SANDBOX),
    ("{% set a = 'a' * 100000 %}{% set a = a + a %}{% set a = a + a %}{% set a = a + a %}{% set a = a + a %}", SANDBOX),
    ("{% set a %}{{ 'a' * 100000 }}{% endset %}{% set b %}" + "{{ a }}" * 11 + "{% endset %}{{ b|length }}", SANDBOX),
    ("{% for i in range(100000) %}{{ 'a' * 100 }}{% endfor %}", SANDBOX),
    ("{% set a = ['a' * 1000] %}" + "{% set a = [a, a] %}" * 11 + "{{ a|length }}", SANDBOX),
    ("{% set a = ('a' * 1000,) %}" + "{% set a = (a, a) %}" * 11 + "{{ a|length }}", SANDBOX),
    ("{% set a = {'k': 'a' * 1000} %}" + "{% set a = {'x': a, 'y': a} %}" * 11 + "{{ a|length }}", SANDBOX),
    ("{% set s = 'a' * 999999 %}{% for i in range(99999) %}{% set t = s ~ '' %}{% endfor %}", SANDBOX),
    ("{% set s = 'a' * 999999 %}{% for i in range(99999) %}{% set t = s|upper %}{% endfor %}", SANDBOX),
    ("{{ 'a'|center(1000000000) }}", SANDBOX),
    ("{{ x.ljust(1000000000) }}", SANDBOX),
    ("{{ 'a'|indent(1000000000, first=true) }}", SANDBOX),
    ("{{ ('\t' * 1000).expandtabs(100000) }}", SANDBOX),
    ("{{ '{:>1000000000}'.format(1) }}", SANDBOX),
    ("{{ '{:>{w}}'.format(1, w=1000000000) }}", SANDBOX),
    ("{{ '%1000000000d' % 1 }}", SANDBOX),
    ("{{ '%*d' % (1000000000, 1) }}", SANDBOX),
    ("{{ '%.1000000000f'|format(1.0) }}", SANDBOX),
    ("{{ ('a' * 100000)|replace('a', 'a' * 100000) }}", SANDBOX),
    ("{{ ('a' * 100000).replace('a', 'a' * 100000) }}", SANDBOX),
    ("{{ range(100000)|map('string')|join('a' * 1000) }}", SANDBOX),
    ("{{ ('a' * 1000).join(range(100000)|map('string')) }}", SANDBOX),
    ("{{ ('h' * 1000).translate({104: 'a' * 100000}) }}", SANDBOX),
    ("{{ n.to_bytes(1000000000, 'big') }}", SANDBOX),
    ("{{ d|tojson(indent=100000000) }}", SANDBOX),
    ("{{ ('&' * 100000)|forceescape|forceescape|forceescape|forceescape }}", SANDBOX),
    ("{{ 'ab'|wordwrap(1, wrapstring='c' * 1000000) }}", SANDBOX),
    ("{{ range(10)|batch(1000000000, 'x')|list }}", SANDBOX),
    ("{{ range(10)|slice(1000000000)|list }}", SANDBOX),
    ("{{ ([[1]] * 100000)|sum(start=[]) }}", SANDBOX),
    # CPU
    ("{{ 9**(9**9) }}", SANDBOX),  # Python's 9**9**9 (Jinja's ** is left-associative: see below)
    ("{{ ((10**1000)**1000)**1000 }}", SANDBOX),
    ("{{ 2**10000 * 2**10000 }}", SANDBOX),
    ("{% for i in range(10**9) %}{% endfor %}", SANDBOX),
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", SANDBOX),
    ("{% macro f(k) %}{% if k %}{{ f(k - 1) }}{{ f(k - 1) }}{% endif %}{% endmacro %}{{ f(60) }}", SANDBOX),
]

# Names that exist only as globals of a default Jinja2 (or Flask) environment: no such variable.
UNKNOWN_NAMES = [
    ("{{ cycler.__init__.__globals__.os.popen('id').read() }}", "cycler"),
    ("{{ joiner.__init__.__globals__ }}", "joiner"),
    ("{{ lipsum.__globals__['os'].popen('id').read() }}", "lipsum"),
    ("{{ namespace.__init__.__globals__ }}", "namespace"),
    ("{{ config }}", "config"),
    ("{{ config.items() }}", "config"),
    ("{{ request.application.__globals__.__builtins__ }}", "request"),
    ("{{ dict(a=1) }}", "dict"),
    ("{{ url_for.__globals__ }}", "url_for"),
]


@pytest.mark.parametrize(("payload", "reason"), BLOCKED, ids=[p for p, _ in BLOCKED])
def test_payload_in_template_fails_the_item(engine: Engine, tmp_path: Path, payload: str, reason: str) -> None:
    started = time.perf_counter()
    [result] = render(engine, tmp_path, payload)
    assert result.status == "failed", result
    assert result.outputs == {}
    assert result.error is not None and result.error["stage"] == "ad"
    assert reason in result.error["reason"]
    assert_no_leak(result)
    assert time.perf_counter() - started < 10  # blocked early, not after the damage


@pytest.mark.parametrize(("payload", "name"), UNKNOWN_NAMES, ids=[p for p, _ in UNKNOWN_NAMES])
def test_payload_using_default_globals_is_rejected_at_validation(engine: Engine, payload: str, name: str) -> None:
    with pytest.raises(PipelineFileError) as info:
        engine.load_text(pipeline(payload), "<test>")
    assert f"uses variable '{name}'" in str(info.value)


def test_enough_payloads_are_covered() -> None:
    assert len(BLOCKED) + len(UNKNOWN_NAMES) >= 12


SHELL_PAYLOADS = [
    "{{ self._TemplateReference__context.cycler.__init__.__globals__.os.system('touch MARK') }}",
    "{{ self.__init__.__globals__.__builtins__.__import__('os').system('touch MARK') }}",
    "{{ range.__globals__['__builtins__']['__import__']('os').popen('touch MARK').read() }}",
    "{{ (x|attr('__class__')|attr('__base__')|attr('__subclasses__'))()|map(attribute='__name__')|list }}",
    "{{ '{0.__init__.__globals__[os].system}'.format(self._TemplateReference__context.cycler) }}",
]


@pytest.mark.parametrize("payload", SHELL_PAYLOADS)
def test_shell_command_in_template_does_not_run(engine: Engine, tmp_path: Path, payload: str) -> None:
    mark = tmp_path / "pwned"
    [result] = render(engine, tmp_path, payload.replace("MARK", str(mark)))
    assert result.status == "failed"
    assert_no_leak(result)
    assert not mark.exists()


def test_without_the_sandbox_the_payloads_are_live(tmp_path: Path) -> None:
    """The payloads above are real: a plain Jinja2 environment runs the command and leaks classes."""
    mark = tmp_path / "pwned"
    plain = jinja2.Environment()
    plain.from_string(SHELL_PAYLOADS[0].replace("MARK", str(mark))).render()
    assert mark.exists()
    leaked = plain.from_string(BLOCKED[0][0]).render()
    assert "<class 'subprocess.Popen'>" in leaked or "<class" in leaked
    assert "<class" in plain.from_string("{{ '{0.__class__}'.format(x) }}").render(x="hi")


# Each of these builds a few million characters in Jinja2's own sandbox (so the payloads are live);
# the stage's budgets stop them (and their bigger versions above) before they run.
MODERATE = ["{{ 'a'|center(2000000) }}", "{{ '%2000000d' % 1 }}", "{{ ('a' * 2000)|replace('a', 'a' * 2000) }}",
            "{% for i in range(100000) %}{{ 'abc' }}{{ 'def' * 10 }}{% endfor %}",
            "{% set a = ['a' * 1000] %}" + "{% set a = [a, a] %}" * 11 + "{{ a }}"]


@pytest.mark.parametrize("payload", MODERATE)
def test_jinja_sandbox_alone_lets_the_moderate_payloads_grow(engine: Engine, tmp_path: Path, payload: str) -> None:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    assert len(ImmutableSandboxedEnvironment().from_string(payload).render()) > 1_000_000
    [result] = render(engine, tmp_path, payload)
    assert result.status == "failed" and SANDBOX in result.error["reason"]  # type: ignore[index]


def test_jinja_power_is_left_associative_so_9_9_9_is_small(engine: Engine, tmp_path: Path) -> None:
    [result] = render(engine, tmp_path, "{{ 9**9**9 }}")
    assert result.outputs == {"ad.text": str((9**9) ** 9)}


# ----------------------------------------------------------------- the same payloads as row values

def test_payloads_as_row_values_come_out_literally(engine: Engine, tmp_path: Path) -> None:
    payloads = [p for p, _ in BLOCKED + UNKNOWN_NAMES]
    payloads += [p.replace("MARK", str(tmp_path / "pwned")) for p in SHELL_PAYLOADS]
    payloads += ["{{ product }}", "{% raw %}x{% endraw %}", "{#", "{{", "}}", "\u202e{{ é }}\u0000"]
    results = run_text(pipeline("Ad: {{ product }}", "{product: str}", strip=False),
                       [{"product": p} for p in payloads], tmp_path / "out", engine, inventory=CPU_ONLY).results
    assert [r.status for r in results] == ["done"] * len(payloads)
    assert [r.outputs["ad.text"] for r in results] == [f"Ad: {p}" for p in payloads]
    assert not (tmp_path / "pwned").exists()


def test_row_values_in_lists_and_dicts_are_not_rendered(engine: Engine, tmp_path: Path) -> None:
    row = {**ROW, "features": ["{{ 7*7 }}", "{{ self }}"], "d": {"k": "{% for i in range(3) %}x{% endfor %}"}}
    [result] = render(engine, tmp_path, "{{ features|join('|') }} {{ d.k }}", [row])
    assert result.outputs == {"ad.text": "{{ 7*7 }}|{{ self }} {% for i in range(3) %}x{% endfor %}"}


# ----------------------------------------------------------------- behaviour

def test_missing_key_at_render_time_is_an_item_error_naming_it(engine: Engine, tmp_path: Path) -> None:
    rows = [ROW, {**ROW, "d": {"b": "only b"}}]
    results = render(engine, tmp_path, "{{ d.a }} and {{ d.b }}", rows)
    assert results[0].status == "done" and results[0].outputs == {"ad.text": "1 and two"}
    assert results[1].status == "failed"
    assert results[1].error is not None and results[1].error["stage"] == "ad"
    assert "template variable" in results[1].error["reason"] and "'a'" in results[1].error["reason"]


def test_strict_undefined_also_for_missing_attributes(engine: Engine, tmp_path: Path) -> None:
    [result] = render(engine, tmp_path, "{{ d.missing|default('x') }}|{{ d.nope }}")
    assert result.status == "failed" and "nope" in result.error["reason"]  # type: ignore[index]


def test_unknown_variable_is_rejected_at_validation_with_did_you_mean(engine: Engine) -> None:
    with pytest.raises(PipelineFileError) as info:
        engine.load_text(pipeline("{{ featurse|join(', ') }}"), "<test>")
    message = str(info.value)
    assert "uses variable 'featurse'" in message and "did you mean 'features'" in message
    assert "stage 'ad'" in message


def test_template_syntax_error_is_rejected_at_validation(engine: Engine) -> None:
    with pytest.raises(PipelineFileError) as info:
        engine.load_text(pipeline("{{ x "), "<test>")
    assert "template syntax error" in str(info.value)


@pytest.mark.parametrize(("strip", "expected"), [(None, "hi X"), (True, "hi X"), (False, "  hi X  ")])
def test_strip_param(engine: Engine, tmp_path: Path, strip: bool | None, expected: str) -> None:
    [result] = render(engine, tmp_path, "  hi {{ x }}  \n", [{**ROW, "x": "X"}], strip=strip)
    assert result.outputs == {"ad.text": expected}


def test_named_inputs_from_upstream_stages(engine: Engine, tmp_path: Path) -> None:
    text = """
name: t
inputs: {product: str}
stages:
  brief: {uses: template, with: {template: "{{ product }} brief"}}
  echo: {uses: test.echo, inputs: {text: brief.text}, with: {prefix: ">"}}
  final:
    uses: template
    inputs: {b: brief.text, e: echo.text}
    with: {template: "{{ b|upper }} / {{ e }} / {{ product }}"}
outputs: {final: final.text}
"""
    [result] = run_text(text, [{"product": "lamp"}], tmp_path / "out", engine, inventory=CPU_ONLY).results
    assert result.status == "done"
    assert result.outputs == {"final": "LAMP BRIEF / >lamp brief / lamp"}


def test_row_values_of_list_and_dict_types(engine: Engine, tmp_path: Path) -> None:
    template = ("{{ features|join(', ') }}; {{ features[0] }}; {{ nums|sum }}; {{ d.a + 1 }}; {{ d['b'] }}; "
                "{{ d|length }}")
    [result] = render(engine, tmp_path, template)
    assert result.outputs == {"ad.text": "light, small; light; 6; 2; two; 2"}


@pytest.mark.parametrize(("template", "expected"), [
    ("{{ x|upper }} {{ features|join(' + ') }}", "HI light + small"),
    ("{{ 'a long sentence'|truncate(12, leeway=0) }}", "a long..."),
    ("{{ '%.2f'|format(price) }} {{ '{:,}'.format(1234567) }} {{ '%05d' % n }}", "9.50 1,234,567 00003"),
    ("{% for f in features %}{{ loop.index }}.{{ f|title }} {% endfor %}", "1.Light 2.Small"),
    ("{{ x.replace('h', 'H') }} {{ ', '.join(features) }} {{ x|center(6) }}|", "Hi light, small   hi  |"),
    ("{{ '-' * 5 }} {{ 10**6 }} {{ range(3)|list }} {{ d|dictsort|first }}", "----- 1000000 [0, 1, 2] ('a', 1)"),
    ("{% macro b(t) %}[{{ t }}]{% endmacro %}{{ b(x) }}{{ features|map('upper')|join }}", "[hi]LIGHTSMALL"),
    ("{% for i in range(20000) %}{% endfor %}{{ range(1000)|map('string')|join|length }}", "2890"),
    # constructs the stage's guards rewrite (loops, literals, `~`) still compile and behave
    ("{% macro m(a=[1, 2], b={'k': (3,)}) %}{{ a|sum }}{{ b.k[0] }}{% endmacro %}{{ m() }}", "33"),
    ("{% for i in [] %}{{ i }}{% else %}none{% endfor %} {% for i in range(4) %}{{ loop.cycle('x', 'y') }}{% endfor %}",
     "none xyxy"),
    ("{% set a, b = (1, 2) %}{{ a }}{{ b }}{% for k, v in d|dictsort if v != 1 %}{{ k }}{{ v }}{% endfor %}", "12btwo"),
    ("{% filter upper %}hi {{ x ~ 1 }}{% endfilter %}"
     "{% macro w() %}[{{ caller() }}]{% endmacro %}{% call w() %}in{% endcall %}", "HI HI1[in]"),
    ("{% autoescape true %}{{ '<b>' ~ x }}{% endautoescape %} {{ '%s-%s' % (x, n) }} {{ '%(k)s' % {'k': 1} }}",
     "&lt;b&gt;hi hi-3 1"),
])
def test_common_filters_and_expressions_work(engine: Engine, tmp_path: Path, template: str, expected: str) -> None:
    [result] = render(engine, tmp_path, template)
    assert result.status == "done", result.error
    assert result.outputs == {"ad.text": expected}


def test_one_bad_row_does_not_stop_the_others(engine: Engine, tmp_path: Path) -> None:
    rows = [{**ROW, "n": k} for k in (2, 9999, 3)]
    results = render(engine, tmp_path, "{{ 'ab' * n * 100 }}", rows)
    assert [r.status for r in results] == ["done", "failed", "done"]
    assert results[0].outputs["ad.text"] == "ab" * 200
