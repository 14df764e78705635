# Renders every template in templates/ with every case in cases.json the way Hugging Face
# transformers renders chat templates (Jinja2's ImmutableSandboxedEnvironment with trim_blocks,
# lstrip_blocks and loopcontrols; tojson as json.dumps(ensure_ascii=False); raise_exception;
# strftime_now; {% generation %} rendered transparently; tools and documents passed as None when
# a request has none) and writes expected.json, which ChatTemplateRealModelTests compares our
# interpreter with. Run by hand when templates or cases change; the tests never run Python:
#   apt-get install python3-jinja2   (or pip install jinja2)
#   python3 generate.py
import datetime
import json
import os

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))


class Generation(Extension):
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return nodes.If(nodes.Const(True), body, [], []).set_lineno(lineno)


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def main():
    with open(os.path.join(HERE, "cases.json"), encoding="utf-8") as f:
        spec = json.load(f)
    now = datetime.datetime.fromisoformat(spec["date"] + "T12:00:00")
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[Generation, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: now.strftime(fmt)
    results = {}
    for name, tokens in spec["templates"].items():
        with open(os.path.join(HERE, "templates", name + ".jinja"), encoding="utf-8") as f:
            template = env.from_string(f.read())
        results[name] = {}
        for case_name, case in spec["cases"].items():
            context = {"tools": None, "documents": None, **case}
            context.update({k: v for k, v in tokens.items() if v is not None})
            try:
                results[name][case_name] = {"output": template.render(**context)}
            except jinja2.exceptions.TemplateError as e:
                results[name][case_name] = {"error": str(e), "raised": isinstance(e, jinja2.exceptions.TemplateError) and type(e) is jinja2.exceptions.TemplateError}
            except Exception as e:  # a Python error inside the template (e.g. None + str)
                results[name][case_name] = {"error": f"{type(e).__name__}: {e}", "raised": False}
    out = {"renderer": f"Jinja2 {jinja2.__version__} as transformers configures it", "results": results}
    with open(os.path.join(HERE, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")


main()
