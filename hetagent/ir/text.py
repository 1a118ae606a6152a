"""MLIR text in and out. print(parse(print(m))) == print(m) for every module hetagent builds."""
from __future__ import annotations

import io

from xdsl.context import Context
from xdsl.dialects.arith import Arith
from xdsl.dialects.builtin import Builtin, ModuleOp
from xdsl.dialects.func import Func
from xdsl.dialects.scf import Scf
from xdsl.parser import Parser
from xdsl.printer import Printer
from xdsl.utils.exceptions import ParseError, VerifyException

from hetagent.errors import IRError
from hetagent.ir.dialects import DIALECTS


def context() -> Context:
    ctx = Context()
    for dialect in (Builtin, Func, Scf, Arith, *DIALECTS):
        ctx.load_dialect(dialect)
    return ctx


class _RenderOnce(Printer):
    """xDSL's printer, rendering each distinct attribute or type once: they are immutable, and a chain
    of 10,000 LLM calls prints the same few types and sizes 60,000 times (half of compile time)."""

    def print_attribute(self, attribute) -> None:
        cache = self.__dict__.setdefault("_rendered", {})
        try:
            text = cache.get(attribute)
        except TypeError:              # an unhashable attribute: print it directly
            return super().print_attribute(attribute)
        if text is None:
            buf = io.StringIO()
            Printer(stream=buf, print_generic_format=self.print_generic_format).print_attribute(attribute)
            text = buf.getvalue()
            if "\n" in text:           # indentation depends on where it lands: not cacheable
                return super().print_attribute(attribute)
            cache[attribute] = text
        self.print_string(text)


def print_module(module: ModuleOp, generic: bool = False) -> str:
    out = io.StringIO()
    _RenderOnce(stream=out, print_generic_format=generic).print_op(module)
    return out.getvalue().rstrip("\n") + "\n"


def parse_module(text: str, file: str = "<string>") -> ModuleOp:
    try:
        module = Parser(context(), text, file).parse_module()
        module.verify()
    except ParseError as e:
        first = str(e).strip().splitlines()
        raise IRError(f"{file}: cannot parse MLIR: {first[0] if first else e}") from None
    except VerifyException as e:
        raise IRError(f"{file}: IR does not verify: {str(e).splitlines()[0]}") from None
    return module
