"""`vmform lsp` driven by pytest-lsp, a client that is not ours.

The binary comes from VMFORM_BIN (tests/lsp.rs sets it to the one cargo built).
Each test starts its own server on a project written to a temporary directory.
"""

import asyncio
import json
import os
import pathlib
import random
import subprocess
import tempfile

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
    # The nodes after the one that does not parse are still checked.
    text = 'vm "a" {\n    cpu 2 =\n}\nvm "b" {\n    memory "4Gx"\n}\n'
    more = tmp_path / "more.kdl"
    open_doc(client, more, text)
    found_more = await diagnostics(client, more, lambda d: "E0201" in [x.code for x in d])
    codes = [(d.code, d.range.start.line) for d in found_more]
    assert codes[-1] == ("E0201", 4) and {c for c, _ in codes[:-1]} == {"E0001"}, codes
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


async def test_references_span_the_project(client, project):
    web = project / "web.kdl"
    text = web.read_text()
    (project / "more.kdl").write_text('vm "more" template="linux" {\n    labels env="${env}"\n}\n')
    open_doc(client, web)
    base = (project / "base.kdl").read_text()

    async def refs(position, declaration):
        found = await client.text_document_references_async(
            types.ReferenceParams(
                text_document=types.TextDocumentIdentifier(uri(web)), position=position, context=types.ReferenceContext(include_declaration=declaration)
            )
        )
        return sorted((l.uri.rsplit("/", 1)[1], l.range.start.line, l.range.start.character, l.range.end.character) for l in found or [])

    linux = pos(text, "linux")
    assert await refs(linux, True) == [
        ("base.kdl", 2, 10, 15),
        ("more.kdl", 0, 20, 25),
        ("web.kdl", 0, 19, 24),
    ]
    assert await refs(linux, False) == [("more.kdl", 0, 20, 25), ("web.kdl", 0, 19, 24)]
    env = await refs(pos(text, "env}"), True)
    assert env == [("base.kdl", 0, 7, 10), ("more.kdl", 1, 18, 21), ("web.kdl", 1, 22, 25)]
    assert pos(base, '"env"').character + 1 == 7
    assert await refs(pos(text, "fedora"), True) == [], "an image names nothing"


async def test_workspace_symbols_match_fuzzily(client, project):
    open_doc(client, project / "web.kdl")
    found = await client.workspace_symbol_async(types.WorkspaceSymbolParams(query="lnx"))
    assert [(s.name, s.container_name, s.location.uri) for s in found] == [("linux", "template", uri(project / "base.kdl"))]
    everything = await client.workspace_symbol_async(types.WorkspaceSymbolParams(query=""))
    assert {s.name for s in everything} == {"env", "linux", "small", "web"}


def apply(text, edits):
    """The text with LSP edits (UTF-16 positions, no overlaps) applied."""
    lines = text.split("\n")

    def offset(p):
        before = sum(len(l) + 1 for l in lines[: p.line])
        line = lines[p.line] if p.line < len(lines) else ""
        units = line.encode("utf-16-le")[: p.character * 2].decode("utf-16-le")
        return before + len(units)

    for e in sorted(edits, key=lambda e: (e.range.start.line, e.range.start.character), reverse=True):
        text = text[: offset(e.range.start)] + e.new_text + text[offset(e.range.end):]
    return text


async def test_rename_changes_every_file_and_refuses_bad_names(client, project):
    web = project / "web.kdl"
    text = web.read_text()
    (project / "shared").mkdir()
    (project / "shared" / "more.kdl").write_text('vm "more" instancetype=small {\n    namespace "${env}"\n}\n')
    (project / "inc.kdl").write_text('include "shared/more.kdl"\n')
    open_doc(client, web)

    prepared = await client.text_document_prepare_rename_async(
        types.PrepareRenameParams(text_document=types.TextDocumentIdentifier(uri(web)), position=pos(text, "small"))
    )
    assert prepared.placeholder == "small"

    async def rename(marker, name):
        return await client.text_document_rename_async(
            types.RenameParams(text_document=types.TextDocumentIdentifier(uri(web)), position=pos(text, marker), new_name=name)
        )

    edit = await rename("small", "tiny")
    files = {u.rsplit("/", 1)[1]: apply((project / u.split(project.name + "/", 1)[1]).read_text(), e) for u, e in edit.changes.items()}
    assert files["base.kdl"].startswith('param "env" default="staging"\n\ntemplate "linux"') and 'instancetype "tiny"' in files["base.kdl"]
    assert 'instancetype="tiny"' in files["web.kdl"]
    assert files["more.kdl"].startswith('vm "more" instancetype=tiny {'), "through the include, a bare name stays bare"

    edit = await rename("env}", "stage")
    assert sum(len(e) for e in edit.changes.values()) == 3
    assert 'namespace "shop-${stage}"' in apply(text, edit.changes[uri(web)])

    for marker, name, why in [("env}", "index", "index"), ("linux", "", "empty"), ("small", "linux x", "space")]:
        with pytest.raises(Exception, match=why):
            await rename(marker, name)
    (project / "other.kdl").write_text('template "windows" {\n}\n')
    client.text_document_did_save(types.DidSaveTextDocumentParams(types.TextDocumentIdentifier(uri(web))))
    with pytest.raises(Exception, match="other.kdl:1:10"):
        await rename("linux", "windows")


async def test_code_actions_fix_what_has_one_fix(client, tmp_path):
    text = (
        'template "linux" {\n}\n'
        'vm "web" template="linx" {\n'
        '    memory "2Gi"\n'
        '    networks "n"\n'
        '    port "http" 80\n'
        '    disk "d" { image "x"; bus "virtoi" }\n'
        '    disk "d" { image "y" }\n'
        '}\n'
    )
    path = tmp_path / "web.kdl"
    open_doc(client, path, text)
    await diagnostics(client, path, lambda d: len(d) > 0)

    async def fixes(marker):
        at = pos(text, marker)
        actions = await client.text_document_code_action_async(
            types.CodeActionParams(text_document=types.TextDocumentIdentifier(uri(path)), range=types.Range(at, at), context=types.CodeActionContext(diagnostics=[]))
        )
        return [(a.title, apply(text, a.edit.changes[uri(path)]), a.diagnostics[0].code) for a in actions]

    [(title, fixed, code)] = await fixes("linx")
    assert (title, code) == ("Replace with `linux`", "E0301") and 'template="linux"' in fixed
    [(title, fixed, code)] = await fixes("networks")
    assert code == "E0101" and "\n    network \"n\"\n" in fixed
    [(title, fixed, code)] = await fixes("port")
    assert code == "E0404" and '    network "default" masquerade=#true\n    port "http" 80\n' in fixed
    [(title, fixed, code)] = await fixes("virtoi")
    assert code == "E0107" and 'bus "virtio"' in fixed
    [(title, fixed, code)] = await fixes('d" { image "y"')
    assert (title, code) == ("Rename to `d-2`", "E0310") and 'disk "d-2" { image "y" }' in fixed
    assert await fixes("memory") == []


async def test_range_formatting_formats_only_those_lines(client, tmp_path):
    text = 'vm   "a" {\n  memory "4Gi"\n}\nvm   "b" {\n  memory "4Gi"\n}\n'
    path = tmp_path / "ab.kdl"
    open_doc(client, path, text)
    edits = await client.text_document_range_formatting_async(
        types.DocumentRangeFormattingParams(
            text_document=types.TextDocumentIdentifier(uri(path)), range=types.Range(types.Position(3, 0), types.Position(5, 1)), options=types.FormattingOptions(4, True)
        )
    )
    assert apply(text, edits) == 'vm   "a" {\n  memory "4Gi"\n}\nvm "b" {\n    memory "4Gi"\n}\n'
    whole = await client.text_document_range_formatting_async(
        types.DocumentRangeFormattingParams(
            text_document=types.TextDocumentIdentifier(uri(path)), range=types.Range(types.Position(0, 0), types.Position(6, 0)), options=types.FormattingOptions(4, True)
        )
    )
    fmt = subprocess.run([VMFORM, "fmt", "-"], input=text, capture_output=True, text=True, check=True)
    assert apply(text, whole) == fmt.stdout


POLICY = 'rule "small-only" severity="warning" {\n    description "VMs stay small."\n    deny "object.metadata.name == \'big\'" message="no big VMs"\n}\n'
SPEC = 'vm "big" {\n    memory "2Gi"\n    disk "root" { image "quay.io/containerdisks/fedora:41" }\n}\n'


# One project for the policy tests, made once: the servers' command lines name it.
POLICY_ROOT = pathlib.Path(tempfile.mkdtemp(prefix="vmform-lsp-policy-"))
(POLICY_ROOT / "policies").mkdir()
(POLICY_ROOT / "policies" / "size.kdl").write_text(POLICY)
(POLICY_ROOT / "specs").mkdir()
(POLICY_ROOT / "specs" / "big.kdl").write_text(SPEC)


@pytest_lsp.fixture(config=ClientServerConfig(server_command=[VMFORM, "lsp", "--policy", str(POLICY_ROOT / "policies")]))
async def policy_flag_client(lsp_client: LanguageClient):
    await lsp_client.initialize_session(types.InitializeParams(capabilities=types.ClientCapabilities()))
    yield
    await lsp_client.shutdown_session()


@pytest_lsp.fixture(config=ClientServerConfig(server_command=[VMFORM, "lsp"]))
async def policy_option_client(lsp_client: LanguageClient):
    # The project's setting: a path relative to the workspace folder.
    await lsp_client.initialize_session(
        types.InitializeParams(
            capabilities=types.ClientCapabilities(),
            workspace_folders=[types.WorkspaceFolder(uri=POLICY_ROOT.as_uri(), name="p")],
            initialization_options={"policy": "policies"},
        )
    )
    yield
    await lsp_client.shutdown_session()


async def check_findings(client):
    spec = POLICY_ROOT / "specs" / "big.kdl"
    open_doc(client, spec)
    found = await diagnostics(client, spec, lambda d: any(x.source == "vmform check" for x in d))
    mine = [d for d in found if d.code == "small-only"]
    assert len(mine) == 1 and mine[0].severity == types.DiagnosticSeverity.Warning
    assert mine[0].message == "default/big: no big VMs" and mine[0].range.start.line == 0
    # The same findings as `vmform check`, built-in rules included.
    cli = subprocess.run(
        [VMFORM, "check", "--format", "json", "--policy", str(POLICY_ROOT / "policies"), str(spec.parent)], capture_output=True, text=True
    )
    rules = sorted(f["rule"] for f in json.loads(cli.stdout)["findings"] if not f.get("waived_by"))
    assert sorted(d.code for d in found if d.source == "vmform check") == rules
    # Without errors in the specs only: a spec error hides the findings, as in `vmform check`.
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri(spec), version=2),
            content_changes=[types.TextDocumentContentChangeWholeDocument(text=SPEC.replace('"2Gi"', '"2Gx"'))],
        )
    )
    found = await diagnostics(client, spec, lambda d: [x.code for x in d] == ["E0201"])
    assert all(d.source == "vmform" for d in found)


async def test_policy_findings_with_the_command_line_flag(policy_flag_client):
    await check_findings(policy_flag_client)


async def test_policy_findings_with_the_initialization_option(policy_option_client):
    await check_findings(policy_option_client)


async def test_no_policy_findings_without_policies(client):
    spec = POLICY_ROOT / "specs" / "big.kdl"
    open_doc(client, spec)
    # Diagnostics are published before a request is answered.
    await client.text_document_document_symbol_async(types.DocumentSymbolParams(types.TextDocumentIdentifier(uri(spec))))
    assert not any(d.source == "vmform check" for d in client.diagnostics.get(uri(spec), []))
