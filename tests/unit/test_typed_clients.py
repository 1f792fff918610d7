"""boto3 clients, tables and resources are typed with their stubs, never `Any`.

Every module under chalicelib/ is read from its source (ast). A function parameter, an
annotated attribute or variable, or a function's return, whose name says it holds a client
(s3, table, sfn, events, ssm, sqs, client, dynamodb, stepfunctions; a leading underscore or
a `_client`/`_table` suffix counts too), must not be annotated `Any`: mypy checks no call on
an `Any`, so a misspelt operation or argument would only fail against AWS. The stubs
(requirements-dev.txt) give each its type, imported under `if TYPE_CHECKING:`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "chalicelib"

CLIENT_NAMES = frozenset(
    {"s3", "table", "sfn", "events", "ssm", "sqs", "client", "dynamodb", "stepfunctions"}
)
# Files allowed to keep an `Any` client (relative to the repository root): none.
ALLOWED: frozenset[str] = frozenset()


def names_a_client(name: str) -> bool:
    bare = name.lstrip("_")
    return bare in CLIENT_NAMES or bare.endswith(("_client", "_table"))


def is_any(annotation: ast.expr | None) -> bool:
    """`Any`, `typing.Any`, `"Any"`, or `Any` in a union (`Any | None`, `Optional[Any]`)."""
    match annotation:
        case ast.Name(id="Any") | ast.Attribute(attr="Any") | ast.Constant(value="Any"):
            return True
        case ast.Constant(value=str(text)):
            return is_any(ast.parse(text, mode="eval").body)
        case ast.BinOp(op=ast.BitOr(), left=left, right=right):
            return is_any(left) or is_any(right)
        case ast.Subscript(value=ast.Name(id="Optional") | ast.Attribute(attr="Optional"), slice=inner):
            return is_any(inner)
    return False


def target_name(target: ast.expr) -> str | None:
    match target:
        case ast.Name(id=name) | ast.Attribute(attr=name):
            return name
    return None


def untyped_clients(source: str) -> list[tuple[int, str]]:
    """(line, what) for each client-named parameter, attribute or return annotated `Any`."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            arguments = node.args
            every = [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]
            every += [arg for arg in (arguments.vararg, arguments.kwarg) if arg is not None]
            found += [
                (arg.lineno, f"parameter `{arg.arg}` of {node.name}()")
                for arg in every
                if names_a_client(arg.arg) and is_any(arg.annotation)
            ]
            if names_a_client(node.name) and is_any(node.returns):
                found.append((node.lineno, f"return of {node.name}()"))
        elif isinstance(node, ast.AnnAssign):
            name = target_name(node.target)
            if name is not None and names_a_client(name) and is_any(node.annotation):
                found.append((node.lineno, f"`{ast.unparse(node.target)}`"))
    return found


def test_no_client_in_chalicelib_is_typed_any() -> None:
    offences = [
        f"{path.relative_to(ROOT)}:{line}: {what} is annotated Any; use its stub type"
        for path in sorted(PACKAGE.rglob("*.py"))
        if str(path.relative_to(ROOT)) not in ALLOWED
        for line, what in untyped_clients(path.read_text(encoding="utf-8"))
    ]
    assert offences == [], "\n".join(offences)


def test_the_allowed_files_exist() -> None:
    """An entry for a file that moved or went away would allow nothing and hide nothing."""
    assert [name for name in sorted(ALLOWED) if not (ROOT / name).is_file()] == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("def f(s3: Any) -> None: ...", [(1, "parameter `s3` of f()")]),
        ("def f(*, table: typing.Any) -> None: ...", [(1, "parameter `table` of f()")]),
        ("def f(self, _client: 'Any | None') -> None: ...", [(1, "parameter `_client` of f()")]),
        ("def f(events_client: Optional[Any]) -> None: ...", [(1, "parameter `events_client` of f()")]),
        ("async def f(sfn: Any = None) -> None: ...", [(1, "parameter `sfn` of f()")]),
        ("def _table(name: str) -> Any: ...", [(1, "return of _table()")]),
        ("class C:\n    def __init__(self) -> None:\n        self._ssm: Any = None", [(3, "`self._ssm`")]),
        ("sqs: Any = None", [(1, "`sqs`")]),
        # Not clients, or typed: nothing to say.
        ("def f(body: Any, s3: S3Client, table: 'Table') -> Any: ...", []),
        ("def s3() -> S3Client: ...", []),
        ("def f(tables: Any, s3_key: Any) -> None: ...", []),
    ],
)
def test_the_check_finds_clients_typed_any(source: str, expected: list[tuple[int, str]]) -> None:
    assert untyped_clients(source) == expected
