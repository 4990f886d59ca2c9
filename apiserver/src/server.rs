//! The server: TLS listener, bearer-token authentication, and the dispatch of each
//! request to its verb.

use super::auth::{Role, Tokens, User};
use super::error::ApiError;
use super::handlers::{self, DeleteOptions, Edit, Selection, RequestScope, Writer};
use super::resources::{self, Resource};
use super::route::{Query, Route};
use super::store::{Change, Key, Store};
use super::subresources;
use super::table;
use super::tls::Certificates;
use super::watch::{self, WatchRequest};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch as signal;
use tokio_stream::wrappers::ReceiverStream;

/// The largest request body accepted, as the API server's limit.
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// The version this server reports, in the shape of `/version`.
pub fn version_info() -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": format!("v1.32.0-vmform.{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    })
}

/// What every request handler shares.
pub struct Api {
    pub store: Arc<Store>,
    pub tokens: Tokens,
    /// `https://127.0.0.1:6443`: what discovery tells clients.
    pub address: String,
}

/// A running server; dropping it does not stop it, [`RunningServer::shutdown`] does.
pub struct RunningServer {
    pub local_addr: SocketAddr,
    stop: signal::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningServer {
    /// Stop accepting, give open requests a moment to finish, end watches.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Serve `api` on `listener` until told to stop.
pub fn serve(api: Arc<Api>, listener: TcpListener, certificates: &Certificates) -> std::io::Result<RunningServer> {
    let local_addr = listener.local_addr()?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&certificates.server_config));
    let app = axum::Router::new().fallback(handle).with_state(api);
    let (stop, mut stopped) = signal::channel(false);
    let task = tokio::spawn(async move {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        loop {
            let (tcp, _) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(c) => c,
                    // Out of descriptors or a reset before accept: keep serving the others.
                    Err(_) => { tokio::time::sleep(Duration::from_millis(10)).await; continue; }
                },
                _ = stopped.changed() => break,
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let service = hyper_util::service::TowerToHyperService::new(app.clone());
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await else {
                    return;
                };
                let builder = auto::Builder::new(TokioExecutor::new());
                let connection = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
                let _ = watcher.watch(connection.into_owned()).await;
            });
        }
        // Long watches would hold the shutdown forever: give requests two seconds.
        let _ = tokio::time::timeout(Duration::from_secs(2), graceful.shutdown()).await;
    });
    Ok(RunningServer { local_addr, stop, task })
}

async fn handle(State(api): State<Arc<Api>>, request: Request) -> Response {
    match dispatch(&api, request).await {
        Ok(response) => response,
        Err(e) => error_response(&e),
    }
}

pub fn error_response(e: &ApiError) -> Response {
    json_response(StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), &e.to_status())
}

fn json_response(code: StatusCode, value: &Value) -> Response {
    let body = serde_json::to_vec(value).expect("JSON values serialise");
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// A `meta.k8s.io/v1` Table, labelled as kube-apiserver labels one.
fn table_response(value: &Value) -> Result<Response, ApiError> {
    let body = serde_json::to_vec(value).expect("JSON values serialise");
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/json;as=Table;v=v1;g=meta.k8s.io")], body).into_response())
}

/// `PUT /apis/subresources.kubevirt.io/v1/namespaces/NS/virtualmachines/NAME/start` and
/// the other KubeVirt actions: 202 Accepted with no body, as virt-api answers.
async fn kubevirt_action(api: &Api, user: &User, method: &Method, request: &subresources::Request, body: Body) -> Result<Response, ApiError> {
    let put = method == Method::PUT;
    if put && user.role == Role::ReadOnly {
        let group = resources::kubevirt_actions::GROUP;
        return Err(ApiError::new(
            403,
            "Forbidden",
            format!(
                "{}.{group} \"{}\" is forbidden: User \"{}\" cannot update resource \"{}\" in API group \"{group}\" in the namespace \"{}\"",
                request.plural,
                request.name,
                user.name,
                request.resource(),
                request.namespace
            ),
        )
        .about(group, &request.resource(), &request.name));
    }
    subresources::serve(&api.store, request, put, &read_body(body).await?).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

fn authenticate(api: &Api, headers: &HeaderMap) -> Result<User, ApiError> {
    let unauthorized = || ApiError::new(401, "Unauthorized", "Unauthorized");
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(unauthorized)?;
    api.tokens.authenticate(token).ok_or_else(unauthorized)
}

/// The verb a request is, in RBAC's words.
fn verb(method: &Method, named: bool, watch: bool) -> Result<&'static str, ApiError> {
    Ok(match (method.as_str(), named) {
        ("GET", _) if watch => "watch",
        ("GET", false) => "list",
        ("GET", true) => "get",
        ("POST", false) => "create",
        ("PUT", true) => "update",
        ("PATCH", true) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        (m, _) => {
            return Err(ApiError::new(405, "MethodNotAllowed", format!("the server does not allow this method on the requested resource: {m}")));
        }
    })
}

fn forbidden(user: &User, verb: &str, resource: &Resource, namespace: Option<&str>, name: Option<&str>) -> ApiError {
    let subject = match name {
        Some(n) => format!("{} \"{n}\" is forbidden", resource.qualified()),
        None => format!("{} is forbidden", resource.qualified()),
    };
    let scope = match namespace {
        Some(ns) => format!(" in the namespace \"{ns}\""),
        None => " at the cluster scope".to_string(),
    };
    ApiError::new(
        403,
        "Forbidden",
        format!("{subject}: User \"{}\" cannot {verb} resource \"{}\" in API group \"{}\"{scope}", user.name, resource.plural, resource.group),
    )
    .about(resource.group, resource.plural, name.unwrap_or(""))
}

/// `fieldManager`, else the user agent's product name (`kubectl`), as the API server
/// derives it.
fn field_manager(query: &Query, headers: &HeaderMap) -> Result<String, ApiError> {
    let manager = match query.get("fieldManager") {
        Some(m) => m.to_string(),
        None => headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .and_then(|ua| ua.split('/').next())
            .filter(|s| !s.is_empty())
            .unwrap_or("unknown")
            .to_string(),
    };
    if manager.len() > 128 || manager.chars().any(|c| c.is_control()) {
        return Err(ApiError::bad_request("fieldManager must be at most 128 printable characters"));
    }
    Ok(manager)
}

async fn read_body(body: Body) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(body, MAX_BODY).await.map_err(|_| {
        ApiError::new(413, "RequestEntityTooLarge", format!("the request body is larger than the limit of {MAX_BODY} bytes"))
    })
}

async fn dispatch(api: &Arc<Api>, request: Request) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let route = Route::parse(parts.uri.path());
    // Health and version are public, as on a real API server; nothing else is.
    if let Ok(Route::Version) = route {
        return Ok(json_response(StatusCode::OK, &version_info()));
    }
    if let Ok(Route::Health) = route {
        return Ok((StatusCode::OK, "ok").into_response());
    }
    let user = authenticate(api, &parts.headers)?;
    let route = route?;
    let query = Query::parse(parts.uri.query());
    let ok = |v: &Value| Ok(json_response(StatusCode::OK, v));
    let not_found = || ApiError::not_found("the server could not find the requested resource");
    let (resource, namespace, name, subresource) = match route {
        Route::Version | Route::Health => unreachable!("answered above"),
        Route::CoreVersions => return ok(&resources::core_versions(&api.address)),
        Route::Groups => return ok(&resources::group_list()),
        Route::OpenApiRoot => return ok(&resources::openapi_v3_root()),
        Route::OpenApi(path) => return ok(&resources::openapi_v3(&path).ok_or_else(not_found)?),
        Route::Group(g) => return ok(&resources::group(&g).ok_or_else(not_found)?),
        Route::ResourceList { group, version } => return ok(&resources::resource_list(&group, &version).ok_or_else(not_found)?),
        Route::KubeVirtAction(request) => return kubevirt_action(api, &user, &parts.method, &request, body).await,
        Route::Collection { resource, namespace } => (resource, namespace, None, None),
        Route::Object { resource, namespace, name, subresource } => (resource, namespace, Some(name), subresource),
    };
    let verb = verb(&parts.method, name.is_some(), query.flag("watch"))?;
    if user.role == Role::ReadOnly && !matches!(verb, "get" | "list" | "watch") {
        return Err(forbidden(&user, verb, resource, namespace.as_deref(), name.as_deref()));
    }
    let target = RequestScope { resource, namespace: namespace.as_deref() };
    // `kubectl get` asks for a Table; anything else gets the objects.
    let as_table = match table::wanted(parts.headers.get(header::ACCEPT).and_then(|v| v.to_str().ok())) {
        true if matches!(verb, "get" | "list" | "watch") => Some(table::Include::from_query(&query)?),
        _ => None,
    };
    let dry_run = query.dry_run()?;
    let manager = field_manager(&query, &parts.headers)?;
    let writer = Writer { manager: &manager, dry_run };
    let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/json").to_string();
    let store = &api.store;
    match (verb, name) {
        // An object and its status subresource read the same.
        ("get", Some(name)) => {
            let object = handlers::get(store, &target, &name)?;
            match as_table {
                Some(include) => table_response(&table::from_object(resource, &object, include)),
                None => ok(&object),
            }
        }
        ("list", None) => {
            let list = handlers::list(store, &target, &query)?;
            match as_table {
                Some(include) => table_response(&table::from_list(resource, &list, include)),
                None => ok(&list),
            }
        }
        ("watch", name) => watch_response(store, resource, namespace, name, &query, as_table),
        ("create", None) => {
            let object = handlers::parse_body(&read_body(body).await?, &content_type)?;
            let created = handlers::create(store, &target, &writer, object).await?;
            Ok(json_response(StatusCode::CREATED, &created))
        }
        ("update", Some(name)) => {
            let object = handlers::parse_body(&read_body(body).await?, &content_type)?;
            let (object, _) = handlers::modify(store, &target, &name, subresource.as_deref(), &writer, Edit::Replace(object)).await?;
            ok(&object)
        }
        ("patch", Some(name)) => {
            let edit = patch_edit(&read_body(body).await?, &content_type, &query)?;
            let (object, created) = handlers::modify(store, &target, &name, subresource.as_deref(), &writer, edit).await?;
            Ok(json_response(if created { StatusCode::CREATED } else { StatusCode::OK }, &object))
        }
        ("delete", Some(name)) => {
            let (options, body_dry_run) = DeleteOptions::parse(&read_body(body).await?)?;
            let writer = Writer { manager: &manager, dry_run: dry_run || body_dry_run };
            ok(&handlers::delete(store, &target, &name, &writer, options).await?)
        }
        ("deletecollection", None) => ok(&handlers::delete_collection(store, &target, &query, &writer).await?),
        _ => Err(ApiError::new(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")),
    }
}

/// A watch stream, as JSON lines (or table rows for `kubectl get -w`).
fn watch_response(
    store: &Arc<Store>,
    resource: &'static Resource,
    namespace: Option<String>,
    name: Option<String>,
    query: &Query,
    as_table: Option<table::Include>,
) -> Result<Response, ApiError> {
    let mut selection = Selection::parse(query)?;
    if let Some(name) = name {
        // The legacy `/…/name?watch=true` form watches one object.
        selection.fields = Some(super::selectors::FieldSelector::parse(&format!("metadata.name={name}"))?);
    }
    let resource_version = match query.get("resourceVersion") {
        None => None,
        Some(rv) => Some(rv.parse::<u64>().map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?),
    };
    let send_initial_events = query.flag("sendInitialEvents");
    if send_initial_events && !query.flag("allowWatchBookmarks") {
        return Err(ApiError::new(422, "Invalid", "sendInitialEvents requires setting allowWatchBookmarks to true"));
    }
    let lines = watch::start(
        store,
        WatchRequest {
            resource,
            namespace,
            selection,
            resource_version,
            send_initial_events,
            bookmarks: query.flag("allowWatchBookmarks"),
            timeout: WatchRequest::timeout_from(query.number("timeoutSeconds")?),
        },
    );
    let stream = ReceiverStream::new(lines).map(move |line| {
        Ok::<_, std::convert::Infallible>(match as_table {
            Some(include) => table::watch_line(resource, line, include),
            None => line,
        })
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::TRANSFER_ENCODING, "chunked")
        .body(Body::from_stream(stream))
        .expect("a valid response"))
}

/// A PATCH body as the edit its media type names.
fn patch_edit(bytes: &[u8], content_type: &str, query: &Query) -> Result<Edit, ApiError> {
    let media = content_type.split(';').next().unwrap_or("").trim();
    match media {
        "application/apply-patch+yaml" => {
            if query.get("fieldManager").is_none() {
                return Err(ApiError::bad_request("PATCH requests for server-side apply require fieldManager to be set"));
            }
            Ok(Edit::Apply { body: handlers::parse_body(bytes, "yaml")?, force: query.flag("force") })
        }
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => Ok(Edit::MergePatch(handlers::parse_body(bytes, "json")?)),
        "application/json-patch+json" => Ok(Edit::JsonPatch(
            serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request(format!("the JSON patch could not be decoded: {e}")))?,
        )),
        other => Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml; got {other:?}"),
        )),
    }
}

/// Namespaces every cluster starts with.
pub const SYSTEM_NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

/// Create the system namespaces that are missing.
pub async fn bootstrap(store: &Store) -> Result<(), ApiError> {
    for ns in SYSTEM_NAMESPACES {
        let key = Key::new(&resources::NAMESPACE, "", ns);
        store
            .write(
                key,
                false,
                Box::new(move |current| {
                    if current.is_some() {
                        return Ok(Change::Unchanged);
                    }
                    Ok(Change::Put(json!({
                        "apiVersion": "v1",
                        "kind": "Namespace",
                        "metadata": {
                            "name": ns,
                            "uid": uuid::Uuid::new_v4().to_string(),
                            "creationTimestamp": handlers::now(),
                            "labels": { "kubernetes.io/metadata.name": ns },
                        },
                        "spec": { "finalizers": ["kubernetes"] },
                        "status": { "phase": "Active" },
                    })))
                }),
            )
            .await?;
    }
    Ok(())
}
