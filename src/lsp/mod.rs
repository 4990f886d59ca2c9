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

/// Serve on stdin and stdout until the client says `exit`.
pub fn run() -> Result<(), Error> {
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
        ..Default::default()
    };
    let init = InitializeResult {
        capabilities,
        server_info: Some(ServerInfo { name: "vmform".into(), version: Some(env!("CARGO_PKG_VERSION").into()) }),
    };
    let (id, params) = connection.initialize_start()?;
    // Offer snippets only to a client that expands them; others would insert `${1:name}`.
    let snippets = serde_json::from_value::<InitializeParams>(params)
        .ok()
        .and_then(|p| p.capabilities.text_document?.completion?.completion_item?.snippet_support)
        .unwrap_or(false);
    connection.initialize_finish(id, serde_json::to_value(init)?)?;
    Server { connection: &connection, snippets, docs: HashMap::new(), projects: HashMap::new(), dirty: BTreeSet::new() }
        .main_loop()?;
    drop(connection);
    io.join()?;
    Ok(())
}

struct Server<'c> {
    connection: &'c Connection,
    /// The client expands snippets in completions.
    snippets: bool,
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
                    // Answer from the latest text: compile what edits left pending first.
                    self.refresh()?;
                    let id = r.id.clone();
                    let method = r.method.clone();
                    let response = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.request(r))) {
                        Ok(Ok(result)) => Response::new_ok(id, result),
                        Ok(Err(e)) => Response::new_err(id, ErrorCode::InvalidParams as i32, e.0),
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

    fn request(&self, r: Request) -> Result<serde_json::Value, Error> {
        fn params<P: serde::de::DeserializeOwned>(r: Request) -> Result<P, Error> {
            serde_json::from_value(r.params).map_err(Error::from)
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
            _ => return Err(Error(format!("vmform lsp does not handle {}", r.method))),
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
            let previous = self.projects.remove(&root).map(|(_, published)| published).unwrap_or_default();
            let project = Project::compile(&root, &self.docs);
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

/// The project's diagnostics by file, as LSP diagnostics. One with no place in a file
/// (a run with no vm) is shown at the top of each open document of the project.
fn diagnostics(project: &Project, open: &[&PathBuf]) -> HashMap<PathBuf, Vec<Diagnostic>> {
    let mut out: HashMap<PathBuf, Vec<Diagnostic>> = HashMap::new();
    let range_of = |span: vmform_compiler::Span| {
        let f = project.sources.get(span.file);
        (f.path.clone(), document::LineIndex::new(&f.text).range(&f.text, span.range()))
    };
    for d in project.diagnostics.sorted() {
        let related: Vec<DiagnosticRelatedInformation> = d
            .secondary
            .iter()
            .filter_map(|l| {
                let (path, range) = range_of(l.span);
                Some(DiagnosticRelatedInformation { location: Location::new(path_to_uri(&path)?, range), message: l.text.clone() })
            })
            .collect();
        let mut message = d.message.clone();
        if let Some(help) = &d.help {
            message.push_str("\nhelp: ");
            message.push_str(help);
        }
        let lsp = |range| Diagnostic {
            range,
            severity: Some(match d.severity() {
                Severity::Error => DiagnosticSeverity::ERROR,
                Severity::Warning => DiagnosticSeverity::WARNING,
            }),
            code: Some(NumberOrString::String(d.code.as_str().into())),
            source: Some("vmform".into()),
            message: message.clone(),
            related_information: (!related.is_empty()).then(|| related.clone()),
            // Editors grey out what is never used.
            tags: (d.code == Code::UnusedDefinition).then(|| vec![DiagnosticTag::UNNECESSARY]),
            ..Default::default()
        };
        match &d.primary {
            Some(l) => {
                let (path, range) = range_of(l.span);
                out.entry(path).or_default().push(lsp(range));
            }
            None => {
                for path in open {
                    out.entry((*path).clone()).or_default().push(lsp(Range::default()));
                }
            }
        }
    }
    out
}
