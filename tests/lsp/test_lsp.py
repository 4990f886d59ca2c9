"""`vmform lsp` driven by pytest-lsp, a client that is not ours.

The binary comes from VMFORM_BIN (tests/lsp.rs sets it to the one cargo built).
Each test starts its own server on a project written to a temporary directory.
"""

import asyncio
import json
import os
import random
import subprocess

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient

VMFORM = os.environ.get("VMFORM_BIN", "vmform")


@pytest_lsp.fixture(config=ClientServerConfig(server_command=[VMFORM, "lsp"]))
async def client(lsp_client: LanguageClient):
    await lsp_client.initialize_session(
        types.InitializeParams(capabilities=pytest_lsp.client_capabilities("visual-studio-code"))
    )
    yield
    await lsp_client.shutdown_session()


def uri(path):
    return path.as_uri()


def open_doc(client, path, text=None):
    if text is None:
        text = path.read_text()
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(types.TextDocumentItem(uri=uri(path), language_id="kdl", version=1, text=text))
    )


async def diagnostics(client, path, until, timeout=20):
    """The diagnostics published for `path` once `until` holds for them."""
    async def wait():
        while uri(path) not in client.diagnostics or not until(client.diagnostics[uri(path)]):
            await client.wait_for_notification(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
        return client.diagnostics[uri(path)]
    return await asyncio.wait_for(wait(), timeout)


def pos(text, marker):
    """The LSP position (UTF-16 columns) where `marker` starts in `text`."""
    before = text[: text.index(marker)]
    line = before.count("\n")
    col = before[before.rfind("\n") + 1:]
    return types.Position(line=line, character=len(col.encode("utf-16-le")) // 2)


async def complete(client, path, position):
    result = await client.text_document_completion_async(
        types.CompletionParams(types.TextDocumentIdentifier(uri(path)), position)
    )
    items = result.items if isinstance(result, types.CompletionList) else result
    return [i.label for i in items or []]


PROJECT = {
    "base.kdl": 'param "env" default="staging"\n\ntemplate "linux" {\n    run-strategy "always"\n}\n\ninstancetype "small" {\n    cpu 1\n    memory "2Gi"\n}\n',
    "web.kdl": 'vm "web" template="linux" instancetype="small" {\n    namespace "shop-${env}"\n    disk "root" {\n        image "quay.io/containerdisks/fedora:41"\n    }\n}\n',
}


@pytest.fixture
def project(tmp_path):
    for name, text in PROJECT.items():
        (tmp_path / name).write_text(text)
    return tmp_path


async def test_diagnostics_follow_unsaved_edits(client, tmp_path):
    # The bad quantity comes after a string with `é` (1 UTF-16 unit) and `😀` (2 units).
    text = 'vm "web" {\n    annotations note="é😀"; memory "4Gx"\n}\n'
    path = tmp_path / "web.kdl"
    path.write_text('vm "web" {\n}\n')  # the disk says otherwise: the open text wins
    open_doc(client, path, text)
    found = await diagnostics(client, path, lambda d: len(d) > 0)
    assert [d.code for d in found] == ["E0201"]
    d = found[0]
    assert d.severity == types.DiagnosticSeverity.Error
    assert d.source == "vmform"
    start = pos(text, '"4Gx"')
    assert (d.range.start.line, d.range.start.character) == (1, 35) == (start.line, start.character)
    assert (d.range.end.line, d.range.end.character) == (1, 40)

    # An incremental change fixes it: the diagnostics are cleared.
    fix = types.Range(start=types.Position(1, 38), end=types.Position(1, 39))
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri(path), version=2),
            content_changes=[types.TextDocumentContentChangePartial(range=fix, text="i")],
        )
    )
    assert list(await diagnostics(client, path, lambda d: len(d) == 0)) == []


async def test_diagnostics_cover_the_whole_project_with_related_places(client, tmp_path):
    (tmp_path / "a.kdl").write_text('template "t" {\n}\nvm "x" template="t" {\n}\n')
    b = tmp_path / "b.kdl"
    b.write_text('template "t" {\n}\n')
    open_doc(client, b)
    found = await diagnostics(client, b, lambda d: len(d) > 0)
    assert [d.code for d in found] == ["E0306"]
    related = found[0].related_information
    assert related and related[0].location.uri == uri(tmp_path / "a.kdl")
    # The other file of the project gets its own (none here), the unused template a warning.
    unused = tmp_path / "c.kdl"
    open_doc(client, unused, 'template "unused" {\n}\n')
    warned = await diagnostics(client, unused, lambda d: len(d) > 0)
    assert [(d.code, d.severity) for d in warned] == [("W0002", types.DiagnosticSeverity.Warning)]
    assert list(warned[0].tags) == [types.DiagnosticTag.Unnecessary]


async def test_a_document_that_does_not_parse_gets_its_syntax_error(client, tmp_path):
    text = 'vm "web" {\n    memory "4Gi"\n    cpu 2 =\n}\n'
    path = tmp_path / "broken.kdl"
    path.write_text(text)
    open_doc(client, path)
    found = await diagnostics(client, path, lambda d: len(d) > 0)
    assert found[0].code == "E0001"
    # The CLI reports the same code at the same line.
    cli = subprocess.run([VMFORM, "validate", "--format", "json", str(tmp_path)], capture_output=True, text=True)
    first = json.loads(cli.stdout)["diagnostics"][0]
    assert (first["code"], first["line"]) == ("E0001", found[0].range.start.line + 1)


async def test_completion_offers_what_the_grammar_accepts(client, project):
    text = (
        'vm "db" template="" {\n'
        '    \n'
        '    run-strategy "\n'
        '    disk "data" {\n'
        '        \n'
        '    }\n'
        '    network "default" \n'
        '    namespace "x-${"\n'
        '}\n'
    )
    path = project / "db.kdl"
    open_doc(client, path, text)
    lines = text.split("\n")

    body = await complete(client, path, types.Position(1, 4))
    assert {"disk", "memory", "cpu", "cloud-init", "lifecycle", "run-strategy"} <= set(body)
    assert "image" not in body and "vm" not in body
    assert "disk (new disk)" in body

    in_disk = await complete(client, path, types.Position(4, 8))
    assert {"image", "volume", "bus", "boot-order"} <= set(in_disk)
    assert "memory" not in in_disk

    strategies = await complete(client, path, types.Position(2, len(lines[2])))
    assert strategies == ["always", "rerun-on-failure", "manual", "halted", "once"]

    templates = await complete(client, path, types.Position(0, len('vm "db" template="')))
    assert templates == ["linux"]

    props = await complete(client, path, types.Position(6, len(lines[6])))
    assert {"masquerade=", "bridge=", "multus=", "mac="} <= set(props)

    params = await complete(client, path, types.Position(7, len(lines[7]) - 1))
    assert params == ["env", "index"]

    top = await complete(client, path, types.Position(9, 0))
    assert {"vm", "template", "param", "vm (new machine)"} <= set(top)


@pytest_lsp.fixture(config=ClientServerConfig(server_command=[VMFORM, "lsp"]))
async def plain_client(lsp_client: LanguageClient):
    # A client that declares nothing: no snippet support.
    await lsp_client.initialize_session(types.InitializeParams(capabilities=types.ClientCapabilities()))
    yield
    await lsp_client.shutdown_session()


async def test_no_snippets_for_a_client_that_cannot_expand_them(plain_client, tmp_path):
    path = tmp_path / "a.kdl"
    open_doc(plain_client, path, "\n")
    top = await complete(plain_client, path, types.Position(0, 0))
    assert "vm" in top and "vm (new machine)" not in top


async def test_hover_documents_nodes_quantities_and_params(client, project):
    path = project / "base.kdl"
    text = path.read_text()
    open_doc(client, path)

    async def hover_at(p, position):
        h = await client.text_document_hover_async(types.HoverParams(types.TextDocumentIdentifier(uri(p)), position))
        return h.contents.value if h else None

    assert "2147483648 bytes" in await hover_at(path, pos(text, '"2Gi"'))
    assert "When the machine runs" in await hover_at(path, pos(text, "run-strategy"))

    web = project / "web.kdl"
    open_doc(client, web)
    on_param = await hover_at(web, pos(web.read_text(), "env}"))
    assert '"staging"' in on_param and "base.kdl:1:7" in on_param


async def test_definition_of_references(client, project):
    web = project / "web.kdl"
    text = web.read_text()
    open_doc(client, web)

    async def definition(position):
        return await client.text_document_definition_async(
            types.DefinitionParams(types.TextDocumentIdentifier(uri(web)), position)
        )

    base = (project / "base.kdl").read_text()
    loc = await definition(pos(text, "linux"))
    assert loc.uri == uri(project / "base.kdl")
    assert loc.range.start == pos(base, '"linux"')
    loc = await definition(pos(text, "small"))
    assert loc.range.start == pos(base, '"small"')
    loc = await definition(pos(text, "env}"))
    assert loc.range.start == pos(base, '"env"')
    assert await definition(pos(text, "fedora")) is None

    # An include goes to the file it names, relative to the including file.
    (project / "shared").mkdir()
    (project / "shared" / "net.kdl").write_text('param "zone" default="a"\n')
    main = project / "main.kdl"
    open_doc(client, main, 'include "shared/net.kdl"\n')
    loc = await client.text_document_definition_async(
        types.DefinitionParams(types.TextDocumentIdentifier(uri(main)), types.Position(0, 12))
    )
    assert loc.uri == uri(project / "shared" / "net.kdl")


async def test_outline_lists_declarations(client, project):
    path = project / "base.kdl"
    open_doc(client, path)
    symbols = await client.text_document_document_symbol_async(
        types.DocumentSymbolParams(types.TextDocumentIdentifier(uri(path)))
    )
    assert [(s.name, s.detail) for s in symbols] == [("env", 'param = "staging"'), ("linux", "template"), ("small", "instancetype")]


async def test_formatting_equals_vmform_fmt(client, tmp_path):
    text = 'vm   "web" {\r\n  memory "4Gi"; cpu 2 // two\n    disk "root" { image "x" }\n}'
    path = tmp_path / "web.kdl"
    open_doc(client, path, text)
    edits = await client.text_document_formatting_async(
        types.DocumentFormattingParams(types.TextDocumentIdentifier(uri(path)), types.FormattingOptions(4, True))
    )
    assert len(edits) == 1 and edits[0].range.start == types.Position(0, 0)
    assert edits[0].range.end == types.Position(3, 1), "the edit covers the whole document, no further"
    fmt = subprocess.run([VMFORM, "fmt", "-"], input=text, capture_output=True, text=True, check=True)
    assert edits[0].new_text == fmt.stdout
    # A document that does not parse is left alone.
    bad = tmp_path / "bad.kdl"
    open_doc(client, bad, 'vm "x" {\n')
    assert not await client.text_document_formatting_async(
        types.DocumentFormattingParams(types.TextDocumentIdentifier(uri(bad)), types.FormattingOptions(4, True))
    )


async def test_random_edits_never_stop_the_server(client, project):
    path = project / "web.kdl"
    text = path.read_text()
    open_doc(client, path, text)
    rng = random.Random(19)
    pieces = ["{", "}", '"', "é", "😀", "\r\n", "\n", "${", "=", "#true", "/*", "//", "\\", "disk", ";", "\u0000"]
    for version in range(2, 300):
        start = types.Position(rng.randrange(0, 12), rng.randrange(0, 90))
        end = types.Position(start.line + rng.randrange(0, 3), rng.randrange(0, 90))
        client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(uri=uri(path), version=version),
                content_changes=[types.TextDocumentContentChangePartial(range=types.Range(start, end), text=rng.choice(pieces))],
            )
        )
        if version % 25 == 0:
            at = types.Position(rng.randrange(0, 15), rng.randrange(0, 200))
            await complete(client, path, at)
            await client.text_document_hover_async(types.HoverParams(types.TextDocumentIdentifier(uri(path)), at))
            await client.text_document_definition_async(types.DefinitionParams(types.TextDocumentIdentifier(uri(path)), at))
    # Still answering, and still right once the text makes sense again.
    await client.text_document_document_symbol_async(types.DocumentSymbolParams(types.TextDocumentIdentifier(uri(path))))
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri(path), version=400),
            content_changes=[types.TextDocumentContentChangeWholeDocument(text='vm "x" {\n    memory "1Gx"\n}\n')],
        )
    )
    found = await diagnostics(client, path, lambda d: [x.code for x in d] == ["E0201"])
    assert found[0].range.start == types.Position(1, 11)
