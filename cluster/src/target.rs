//! Which cluster a run talks to, as kubectl picks it: `--kubeconfig` and `--context`;
//! with neither, the local control plane when it runs, else the current context of
//! `$KUBECONFIG` or `~/.kube/config`. And the one builder of kube clients: every part of
//! vmform (plan and apply, the runtime's processes, `vmform up`'s own runtime, `status`,
//! the tests) gets its client from [`client`].

use crate::error::Error;
use crate::local::{default_data_dir, DataDir, CONTEXT};
use kube::config::{KubeConfigOptions, Kubeconfig};
use std::path::{Path, PathBuf};

/// A cluster, with a client for it.
#[derive(Clone)]
pub struct Target {
    pub client: kube::Client,
    /// `https://127.0.0.1:7443`
    pub server: String,
    pub context: String,
}

impl Target {
    /// `context vmform-local at https://127.0.0.1:7443`: what every plan says it targets.
    pub fn describe(&self) -> String {
        format!("context {} at {}", self.context, self.server)
    }
    /// A kube-rs error from a request to this cluster, as a user can act on it.
    pub fn error(&self, e: kube::Error) -> Error {
        Error::from_kube(e, &self.server, &self.context)
    }
}

/// What the user asked for.
#[derive(Debug, Default, Clone)]
pub struct TargetArgs {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    /// The local control plane's data dir (for the default target).
    pub data_dir: Option<PathBuf>,
}

impl TargetArgs {
    /// The local control plane of `dir`, through the kubeconfig it wrote.
    pub fn local(dir: &DataDir) -> TargetArgs {
        TargetArgs { kubeconfig: Some(dir.kubeconfig()), context: None, data_dir: Some(dir.0.clone()) }
    }
}

/// The kubeconfig and context to use, before connecting.
fn choose(args: &TargetArgs) -> Result<(Kubeconfig, Option<String>), Error> {
    let read = |path: &Path| Kubeconfig::read_from(path).map_err(|e| Error::Kubeconfig(format!("{}: {e}", path.display())));
    if let Some(path) = &args.kubeconfig {
        return Ok((read(path)?, args.context.clone()));
    }
    if args.context.is_none() {
        let local = DataDir(args.data_dir.clone().unwrap_or_else(default_data_dir));
        if local.in_use() && local.kubeconfig().exists() {
            return Ok((read(&local.kubeconfig())?, Some(CONTEXT.to_string())));
        }
    }
    let config = Kubeconfig::read().map_err(|e| {
        Error::Kubeconfig(format!("{e}; no local control plane is running either (start one with `vmform up`)"))
    })?;
    Ok((config, args.context.clone()))
}

/// A client for the cluster `args` names, without a request yet: the one builder of kube
/// clients.
pub async fn client(args: &TargetArgs) -> Result<Target, Error> {
    let (kubeconfig, context) = choose(args)?;
    let context = context.or_else(|| kubeconfig.current_context.clone()).ok_or_else(|| Error::Kubeconfig("it names no current context; give --context".into()))?;
    let options = KubeConfigOptions { context: Some(context.clone()), ..KubeConfigOptions::default() };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options).await.map_err(|e| Error::Kubeconfig(e.to_string()))?;
    let server = config.cluster_url.to_string().trim_end_matches('/').to_string();
    let client = kube::Client::try_from(config).map_err(|e| Error::Kubeconfig(e.to_string()))?;
    Ok(Target { client, server, context })
}

/// Connect to the target cluster and check it serves KubeVirt's VirtualMachines.
pub async fn connect(args: &TargetArgs) -> Result<Target, Error> {
    let target = client(args).await?;
    // One request tells apart an unreachable cluster, refused credentials, and a cluster
    // without KubeVirt.
    let request = http::Request::get("/apis/kubevirt.io/v1").body(vec![]).expect("a valid request");
    match target.client.request::<serde_json::Value>(request).await {
        Ok(list) => {
            let serves_vms = list["resources"].as_array().is_some_and(|r| r.iter().any(|r| r["name"] == "virtualmachines"));
            if serves_vms { Ok(target) } else { Err(Error::NoKubeVirt { server: target.server }) }
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Err(Error::NoKubeVirt { server: target.server }),
        Err(e) => Err(target.error(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kubeconfig(server: &str, context: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\nusers:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: {context}\n  context:\n    cluster: c\n    user: u\ncurrent-context: {context}\n"
        )
    }

    #[tokio::test]
    async fn a_given_kubeconfig_names_the_server_and_its_current_context() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        std::fs::write(&path, kubeconfig("https://127.0.0.1:6443/", "work")).unwrap();
        let target = client(&TargetArgs { kubeconfig: Some(path.clone()), ..Default::default() }).await.unwrap();
        assert_eq!((target.server.as_str(), target.context.as_str()), ("https://127.0.0.1:6443", "work"));
        assert_eq!(target.describe(), "context work at https://127.0.0.1:6443");
        let e = client(&TargetArgs { kubeconfig: Some(path), context: Some("other".into()), ..Default::default() }).await.err().unwrap();
        assert!(e.to_string().starts_with("cannot read the kubeconfig: "), "{e}");
    }

    #[tokio::test]
    async fn the_local_control_plane_is_reached_through_the_kubeconfig_it_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir(dir.path().to_path_buf());
        std::fs::write(data.kubeconfig(), kubeconfig("https://127.0.0.1:7443", CONTEXT)).unwrap();
        let target = client(&TargetArgs::local(&data)).await.unwrap();
        assert_eq!(target.context, CONTEXT);
        let missing = DataDir(dir.path().join("nothing"));
        let e = client(&TargetArgs::local(&missing)).await.err().unwrap();
        assert!(matches!(e, Error::Kubeconfig(_)), "{e}");
    }

    #[tokio::test]
    async fn an_unreachable_cluster_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        // A port nothing listens on: bind one, and let it go.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        std::fs::write(&path, kubeconfig(&format!("http://127.0.0.1:{port}"), "gone")).unwrap();
        let e = connect(&TargetArgs { kubeconfig: Some(path), ..Default::default() }).await.err().unwrap();
        assert!(matches!(e, Error::Unreachable { .. }), "{e}");
    }
}
