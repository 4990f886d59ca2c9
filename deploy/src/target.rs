//! Which cluster a run talks to, as kubectl picks it: `--kubeconfig` and `--context`;
//! with neither, the local control plane when it runs, else the current context of
//! `$KUBECONFIG` or `~/.kube/config`.

use crate::error::DeployError;
use kube::config::{KubeConfigOptions, Kubeconfig};
use std::path::{Path, PathBuf};
use vmform_cluster::local::{DataDir, CONTEXT};

/// A connected cluster.
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
    pub fn error(&self, e: kube::Error) -> DeployError {
        DeployError::from_kube(e, &self.server, &self.context)
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

/// The kubeconfig and context to use, before connecting.
fn choose(args: &TargetArgs) -> Result<(Kubeconfig, Option<String>), DeployError> {
    let read = |path: &Path| Kubeconfig::read_from(path).map_err(|e| DeployError::Kubeconfig(format!("{}: {e}", path.display())));
    if let Some(path) = &args.kubeconfig {
        return Ok((read(path)?, args.context.clone()));
    }
    if args.context.is_none() {
        let local = DataDir(args.data_dir.clone().unwrap_or_else(vmform_cluster::local::default_data_dir));
        if local.in_use() && local.kubeconfig().exists() {
            return Ok((read(&local.kubeconfig())?, Some(CONTEXT.to_string())));
        }
    }
    let config = Kubeconfig::read().map_err(|e| {
        DeployError::Kubeconfig(format!("{e}; no local control plane is running either (start one with `vmform up`)"))
    })?;
    Ok((config, args.context.clone()))
}

/// Connect to the target cluster and check it serves KubeVirt's VirtualMachines.
pub async fn connect(args: &TargetArgs) -> Result<Target, DeployError> {
    let (kubeconfig, context) = choose(args)?;
    let context = context.or_else(|| kubeconfig.current_context.clone()).ok_or_else(|| DeployError::Kubeconfig("it names no current context; give --context".into()))?;
    let options = KubeConfigOptions { context: Some(context.clone()), ..KubeConfigOptions::default() };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options).await.map_err(|e| DeployError::Kubeconfig(e.to_string()))?;
    let server = config.cluster_url.to_string().trim_end_matches('/').to_string();
    let client = kube::Client::try_from(config).map_err(|e| DeployError::Kubeconfig(e.to_string()))?;
    let target = Target { client, server, context };
    // One request tells apart an unreachable cluster, refused credentials, and a cluster
    // without KubeVirt.
    let request = http::Request::get("/apis/kubevirt.io/v1").body(vec![]).expect("a valid request");
    match target.client.request::<serde_json::Value>(request).await {
        Ok(list) => {
            let serves_vms = list["resources"].as_array().is_some_and(|r| r.iter().any(|r| r["name"] == "virtualmachines"));
            if serves_vms { Ok(target) } else { Err(DeployError::NoKubeVirt { server: target.server }) }
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Err(DeployError::NoKubeVirt { server: target.server }),
        Err(e) => Err(target.error(e)),
    }
}
