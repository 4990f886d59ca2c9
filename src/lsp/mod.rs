//! `vmform lsp`: a language server over stdio (LSP 3.17).
//!
//! One thread reads messages in order. Edits update the open documents at once; projects
//! touched by them are compiled again only when no message is waiting, so a burst of
//! keystrokes costs one compile. A handler that panics answers with an error and the
//! server goes on: no input or edit may stop it.

mod document;
mod features;
mod project;

use document::Document;
use lsp_server::{Connection, ErrorCode, Message, Notification, Request, Response};
use lsp_types::notification::{self as notif, Notification as _};
use lsp_types::request::{self as req, Request as _};
use lsp_types::*;
use project::{path_to_uri, root_for, uri_to_path, Project};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use vmform_compiler::policy::Level;
use vmform_compiler::{Code, Severity};

/// The server's one error type: the connection failed (the client went away or sent
/// something that is not LSP).
#[derive(Debug)]
pub struct Error(String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<E: std::error::Error> From<E> for Error {
    fn from(e: E) -> Self {
        Error(e.to_string())
    }
}

/// Serve on stdin and stdout until the client says `exit`. `policies` (files or
/// directories of policy files, as `vmform check --policy` takes) add the findings of
/// `vmform check` to the diagnostics; the client's `initializationOptions.policy` adds more.
pub fn run(policies: Vec<PathBuf>) -> Result<(), Error> {
    let (connection, io) = Connection::stdio();
    let capabilities = ServerCapabilities {
        text_document_sync: Some(TextDocumentSyncCapability::Options(TextDocumentSyncOptions {
            open_close: Some(true),
            change: Some(TextDocumentSyncKind::INCREMENTAL),
            save: Some(TextDocumentSyncSaveOptions::Supported(true)),
            ..Default::default()
        })),
        completion_provider: Some(CompletionOptions {
            trigger_characters: Some(["\"", "=", "{", " "].map(String::from).to_vec()),
            ..Default::default()
        }),
        hover_provider: Some(HoverProviderCapability::Simple(true)),
        definition_provider: Some(OneOf::Left(true)),
        document_symbol_provider: Some(OneOf::Left(true)),
        document_formatting_provider: Some(OneOf::Left(true)),
        document_range_formatting_provider: Some(OneOf::Left(true)),
        references_provider: Some(OneOf::Left(true)),
        workspace_symbol_provider: Some(OneOf::Left(true)),
        rename_provider: Some(OneOf::Right(RenameOptions { prepare_provider: Some(true), work_done_progress_options: Default::default() })),
        code_action_provider: Some(CodeActionProviderCapability::Options(CodeActionOptions {
            code_action_kinds: Some(vec![CodeActionKind::QUICKFIX]),
            ..Default::default()
        })),
        ..Default::default()
    };
    let init = InitializeResult {
        capabilities,
        server_info: Some(ServerInfo { name: "vmform".into(), version: Some(env!("CARGO_PKG_VERSION").into()) }),
    };
    let (id, params) = connection.initialize_start()?;
    let params = serde_json::from_value::<InitializeParams>(params).ok();
    // Offer snippets only to a client that expands them; others would insert `${1:name}`.
    let snippets = params
        .as_ref()
        .and_then(|p| p.capabilities.text_document.as_ref()?.completion.as_ref()?.completion_item.as_ref()?.snippet_support)
        .unwrap_or(false);
    let policies = params.as_ref().map_or(policies.clone(), |p| [policies, option_policies(p)].concat());
    connection.initialize_finish(id, serde_json::to_value(init)?)?;
    Server { connection: &connection, snippets, policies, docs: HashMap::new(), projects: HashMap::new(), dirty: BTreeSet::new() }
        .main_loop()?;
    drop(connection);
    io.join()?;
    Ok(())
}

/// The policies the client names in `initializationOptions`: `{"policy": "DIR"}` or a
/// list of them; a relative path is relative to the workspace's (first) folder.
fn option_policies(p: &InitializeParams) -> Vec<PathBuf> {
    let named: Vec<String> = match p.initialization_options.as_ref().and_then(|o| o.get("policy")) {
        Some(serde_json::Value::String(s)) => vec![s.clone()],
        Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v.as_str().map(String::from)).collect(),
        _ => vec![],
    };
    #[allow(deprecated)] // root_uri: older clients send only it.
    let root = p.workspace_folders.as_ref().and_then(|f| f.first()).and_then(|f| uri_to_path(&f.uri)).or_else(|| p.root_uri.as_ref().and_then(uri_to_path));
    named
        .into_iter()
        .map(|n| match &root {
            Some(r) => vmform_compiler::load::normalize(&r.join(&n)),
            None => PathBuf::from(n),
        })
        .collect()
}

struct Server<'c> {
    connection: &'c Connection,
    /// The client expands snippets in completions.
    snippets: bool,
    /// Policy files and directories whose findings are diagnostics too.
    policies: Vec<PathBuf>,
    /// Open documents by normalised path.
    docs: HashMap<PathBuf, Document>,
    /// Projects with an open document, by root directory; and the files each last
    /// published diagnostics for, so those that no longer have any are cleared.
    projects: HashMap<PathBuf, (Project, BTreeSet<PathBuf>)>,
    /// Roots to compile again once no message is waiting.
    dirty: BTreeSet<PathBuf>,
}

impl Server<'_> {
    fn main_loop(&mut self) -> Result<(), Error> {
        while let Ok(msg) = self.connection.receiver.recv() {
            match msg {
                Message::Request(r) => {
                    if self.connection.handle_shutdown(&r)? {
                        return Ok(());
                    }
                    // Answer from the latest text: compile what edits left pending first,
                    // unless the request reads only the document's own text.
                    if !self.answers_at_once(&r) {
                        self.refresh()?;
                    }
                    let id = r.id.clone();
                    let method = r.method.clone();
                    let response = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.request(r))) {
                        Ok(Ok(result)) => Response::new_ok(id, result),
                        Ok(Err(Failure::Invalid(e))) => Response::new_err(id, ErrorCode::InvalidParams as i32, e.0),
                        Ok(Err(Failure::Refused(why))) => Response::new_err(id, ErrorCode::RequestFailed as i32, why),
                        Err(_) => Response::new_err(id, ErrorCode::InternalError as i32, format!("vmform lsp failed on {method}")),
                    };
                    self.connection.sender.send(Message::Response(response))?;
                }
                Message::Notification(n) => {
                    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.notification(n))).is_err() {
                        eprintln!("vmform lsp: a notification's handler failed; the server goes on");
                    }
                }
                Message::Response(_) => {}
            }
            if self.connection.receiver.is_empty() {
                self.refresh()?;
            }
        }
        Ok(())
    }

    fn request(&self, r: Request) -> Result<serde_json::Value, Failure> {
        fn params<P: serde::de::DeserializeOwned>(r: Request) -> Result<P, Failure> {
            serde_json::from_value(r.params).map_err(|e| Failure::Invalid(Error::from(e)))
        }
        // Results as JSON; `null` for none.
        fn json<T: serde::Serialize>(v: &T) -> serde_json::Value {
            serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
        }
        Ok(match r.method.as_str() {
            req::Completion::METHOD => {
                let p: CompletionParams = params(r)?;
                let pos = &p.text_document_position;
                let items = self.with_doc(&pos.text_document.uri, |doc, _, project| features::completion(doc, project, pos.position, self.snippets));
                json(&items.map(CompletionResponse::Array))
            }
            req::HoverRequest::METHOD => {
                let p: HoverParams = params(r)?;
                let pos = &p.text_document_position_params;
                json(&self.with_doc(&pos.text_document.uri, |doc, _, project| features::hover(doc, project, pos.position)).flatten())
            }
            req::GotoDefinition::METHOD => {
                let p: GotoDefinitionParams = params(r)?;
                let pos = &p.text_document_position_params;
                let loc = self.with_doc(&pos.text_document.uri, |doc, path, project| features::definition(doc, path, project, pos.position));
                json(&loc.flatten().map(GotoDefinitionResponse::Scalar))
            }
            req::DocumentSymbolRequest::METHOD => {
                let p: DocumentSymbolParams = params(r)?;
                let symbols = self.with_doc(&p.text_document.uri, |_, path, project| features::symbols(project, path));
                json(&symbols.map(DocumentSymbolResponse::Nested))
            }
            req::Formatting::METHOD => {
                let p: DocumentFormattingParams = params(r)?;
                json(&self.with_doc(&p.text_document.uri, |doc, path, _| features::format(doc, path)).flatten())
            }
            req::RangeFormatting::METHOD => {
                let p: DocumentRangeFormattingParams = params(r)?;
                json(&self.with_doc(&p.text_document.uri, |doc, path, _| features::format_range(doc, path, p.range)).flatten())
            }
            req::References::METHOD => {
                let p: ReferenceParams = params(r)?;
                let pos = &p.text_document_position;
                let declaration = p.context.include_declaration;
                json(&self.with_doc(&pos.text_document.uri, |doc, _, project| features::references(doc, project, pos.position, declaration)).flatten())
            }
            req::WorkspaceSymbolRequest::METHOD => {
                let p: WorkspaceSymbolParams = params(r)?;
                let mut projects: Vec<&Project> = self.projects.values().map(|(p, _)| p).collect();
                projects.sort_by(|a, b| a.root.cmp(&b.root));
                json(&WorkspaceSymbolResponse::Flat(features::workspace_symbols(projects.into_iter(), &p.query)))
            }
            req::PrepareRenameRequest::METHOD => {
                let p: TextDocumentPositionParams = params(r)?;
                json(&self.with_doc(&p.text_document.uri, |doc, _, _| features::prepare_rename(doc, p.position)).flatten())
            }
            req::Rename::METHOD => {
                let p: RenameParams = params(r)?;
                let pos = &p.text_document_position;
                let edit = self.with_doc(&pos.text_document.uri, |doc, _, project| features::rename(doc, project, pos.position, &p.new_name));
                json(&edit.ok_or(Failure::Refused("the document is not open".into()))?.map_err(Failure::Refused)?)
            }
            req::CodeActionRequest::METHOD => {
                let p: CodeActionParams = params(r)?;
                json(&self.with_doc(&p.text_document.uri, |doc, path, project| features::code_actions(doc, path, project, p.range)))
            }
            _ => return Err(Failure::Invalid(Error(format!("vmform lsp does not handle {}", r.method)))),
        })
    }

    /// Completion and hover read the open document's text (always the latest) and only
    /// names and places from its project, so once the project is compiled they answer at
    /// once, from its last compile, and the compile that edits left pending runs after.
    fn answers_at_once(&self, r: &Request) -> bool {
        let quick = r.method == req::Completion::METHOD || r.method == req::HoverRequest::METHOD;
        let uri = r.params.get("textDocument").and_then(|t| t.get("uri")).and_then(|u| u.as_str()).and_then(|u| u.parse::<Uri>().ok());
        quick
            && uri.and_then(|u| uri_to_path(&u)).is_some_and(|path| {
                let root = root_for(&path, self.projects.values().map(|(p, _)| p));
                self.projects.contains_key(&root)
            })
    }

    /// Run `f` on an open document, its path and its project.
    fn with_doc<T>(&self, uri: &Uri, f: impl FnOnce(&Document, &Path, Option<&Project>) -> T) -> Option<T> {
        let path = uri_to_path(uri)?;
        let doc = self.docs.get(&path)?;
        let root = root_for(&path, self.projects.values().map(|(p, _)| p));
        Some(f(doc, &path, self.projects.get(&root).map(|(p, _)| p)))
    }

    fn notification(&mut self, n: Notification) {
        fn params<P: serde::de::DeserializeOwned>(n: Notification) -> Option<P> {
            serde_json::from_value(n.params).ok()
        }
        let touched = match n.method.as_str() {
            notif::DidOpenTextDocument::METHOD => params::<DidOpenTextDocumentParams>(n).and_then(|p| {
                let path = uri_to_path(&p.text_document.uri)?;
                self.docs.insert(path.clone(), Document::new(p.text_document.text, p.text_document.version));
                Some(path)
            }),
            notif::DidChangeTextDocument::METHOD => params::<DidChangeTextDocumentParams>(n).and_then(|p| {
                let path = uri_to_path(&p.text_document.uri)?;
                let doc = self.docs.get_mut(&path)?;
                for change in p.content_changes {
                    doc.apply(change);
                }
                doc.version = p.text_document.version;
                Some(path)
            }),
            notif::DidSaveTextDocument::METHOD => params::<DidSaveTextDocumentParams>(n).and_then(|p| uri_to_path(&p.text_document.uri)),
            notif::DidCloseTextDocument::METHOD => params::<DidCloseTextDocumentParams>(n).and_then(|p| {
                let path = uri_to_path(&p.text_document.uri)?;
                self.docs.remove(&path);
                Some(path)
            }),
            _ => None,
        };
        if let Some(path) = touched {
            // Its own project, and every project that reads it.
            self.dirty.insert(root_for(&path, self.projects.values().map(|(p, _)| p)));
            self.dirty.extend(self.projects.values().filter(|(p, _)| p.contains(&path)).map(|(p, _)| p.root.clone()));
        }
    }

    /// Compile the dirty projects and publish their diagnostics; a project no open
    /// document belongs to any more is dropped, its diagnostics cleared.
    fn refresh(&mut self) -> Result<(), Error> {
        for root in std::mem::take(&mut self.dirty) {
            let project = Project::compile(&root, &self.docs, self.projects.get(&root).map(|(p, _)| p), &self.policies);
            let previous = self.projects.remove(&root).map(|(_, published)| published).unwrap_or_default();
            let open: Vec<&PathBuf> = self.docs.keys().filter(|d| root_for(d, [&project]) == root).collect();
            let mut by_file = if open.is_empty() { HashMap::new() } else { diagnostics(&project, &open) };
            for path in &previous {
                by_file.entry(path.clone()).or_default();
            }
            let published = by_file.iter().filter(|(_, d)| !d.is_empty()).map(|(p, _)| p.clone()).collect();
            for (path, diagnostics) in by_file {
                let Some(uri) = path_to_uri(&path) else { continue };
                let version = self.docs.get(&path).map(|d| d.version);
                let params = PublishDiagnosticsParams { uri, diagnostics, version };
                let n = Notification::new(notif::PublishDiagnostics::METHOD.into(), params);
                self.connection.sender.send(Message::Notification(n))?;
            }
            if !open.is_empty() {
                self.projects.insert(root, (project, published));
            }
        }
        Ok(())
    }
}

/// Why a request got no result: its parameters were wrong, or what it asked cannot be
/// done (a rename to a name that is taken), said in a sentence for the user.
enum Failure {
    Invalid(Error),
    Refused(String),
}

/// A compiler diagnostic as an LSP one, with the file it is in (`None`: it has no place
/// in a file).
pub(crate) fn lsp_diagnostic(project: &Project, d: &vmform_compiler::Diagnostic) -> (Option<PathBuf>, Diagnostic) {
    let related: Vec<DiagnosticRelatedInformation> = d
        .secondary
        .iter()
        .filter_map(|l| {
            let (path, range) = place(project, l.span);
            Some(DiagnosticRelatedInformation { location: Location::new(path_to_uri(&path)?, range), message: l.text.clone() })
        })
        .collect();
    let mut message = d.message.clone();
    if let Some(help) = &d.help {
        message.push_str("\nhelp: ");
        message.push_str(help);
    }
    let (path, range) = d.primary.as_ref().map(|l| place(project, l.span)).map_or((None, Range::default()), |(p, r)| (Some(p), r));
    let diagnostic = Diagnostic {
        range,
        severity: Some(match d.severity() {
            Severity::Error => DiagnosticSeverity::ERROR,
            Severity::Warning => DiagnosticSeverity::WARNING,
        }),
        code: Some(NumberOrString::String(d.code.as_str().into())),
        source: Some("vmform".into()),
        message,
        related_information: (!related.is_empty()).then_some(related),
        // Editors grey out what is never used.
        tags: (d.code == Code::UnusedDefinition).then(|| vec![DiagnosticTag::UNNECESSARY]),
        ..Default::default()
    };
    (path, diagnostic)
}

/// The file and range of a span: of a project file from its line index, of another file
/// (a policy) from its text.
fn place(project: &Project, span: vmform_compiler::Span) -> (PathBuf, Range) {
    let f = project.sources.get(span.file);
    let range = match project.file(&f.path) {
        Some(file) => file.lines.range(&file.text, span.range()),
        None => document::LineIndex::new(&f.text).range(&f.text, span.range()),
    };
    (f.path.clone(), range)
}

/// The project's diagnostics by file, as LSP diagnostics, then its policy findings with
/// their rule ids as codes. One with no place in a file (a run with no vm) is shown at
/// the top of each open document of the project.
fn diagnostics(project: &Project, open: &[&PathBuf]) -> HashMap<PathBuf, Vec<Diagnostic>> {
    let mut out: HashMap<PathBuf, Vec<Diagnostic>> = HashMap::new();
    let mut add = |path: Option<PathBuf>, d: Diagnostic| match path {
        Some(path) => out.entry(path).or_default().push(d),
        None => {
            for path in open {
                out.entry((*path).clone()).or_default().push(d.clone());
            }
        }
    };
    for d in project.diagnostics.sorted() {
        let (path, d) = lsp_diagnostic(project, d);
        add(path, d);
    }
    for f in &project.findings {
        let (path, range) = f.span.map(|s| place(project, s)).map_or((None, Range::default()), |(p, r)| (Some(p), r));
        let d = Diagnostic {
            range,
            severity: Some(match f.level {
                Level::Error => DiagnosticSeverity::ERROR,
                Level::Warning => DiagnosticSeverity::WARNING,
                Level::Note => DiagnosticSeverity::INFORMATION,
            }),
            code: Some(NumberOrString::String(f.rule.clone())),
            source: Some("vmform check".into()),
            message: format!("{}/{}: {}", f.namespace, f.name, f.message),
            ..Default::default()
        };
        add(path, d);
    }
    out
}
