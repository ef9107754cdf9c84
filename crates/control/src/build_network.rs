//! A build's own network: every build — a language provider's steps, a Dockerfile's RUN
//! steps — runs in a namespace of its own on berth's bridge, whose only way out is the build
//! proxy on the bridge's gateway ([`crate::build_egress`]). The firewall lets its address
//! reach the proxy and nothing else: not the host's loopback or its other addresses (the
//! API, PostgreSQL), not the bridge's other instances, not metadata addresses. The proxy
//! connects only to host names, never to an address given by number. `[build] egress =
//! "none"` gets the namespace without the proxy: nothing at all.
//!
//! The namespace, its firewall entry and its pass through the proxy live as long as the
//! [`BuildNet`]: dropping it takes them away.

use crate::error::ApiError;
use crate::platform::Platform;
use berth_factory::builder::BuildNetwork;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;

/// A build's namespace, held for the build's duration.
pub struct BuildNet {
    platform: Arc<Platform>,
    address: Ipv4Addr,
    ns: String,
    _pass: Option<crate::build_egress::GrantGuard>,
    /// What the factory needs of it.
    pub network: BuildNetwork,
}

impl Platform {
    /// Makes build `build`'s namespace, lets it through the firewall to the build proxy (if
    /// `egress`), and tells the proxy whose it is; refused connections are written to the
    /// build's log.
    pub async fn open_build_network(
        self: &Arc<Self>,
        build: &str,
        egress: bool,
        log: &Path,
    ) -> Result<BuildNet, ApiError> {
        let address = {
            let _a = self.alloc_lock.lock().await;
            let address = self
                .allocate_address(&mut std::collections::HashSet::new())
                .await?;
            let ip: Ipv4Addr = address
                .parse()
                .map_err(|e| ApiError::internal("a build's address", e))?;
            self.policy.add_build(build, ip);
            ip
        };
        let ns = format!("build-{}", crate::random_id(10));
        let mut net = BuildNet {
            platform: self.clone(),
            address,
            ns: ns.clone(),
            _pass: None,
            network: BuildNetwork {
                netns: berth_runtime::network::Network::netns_path(&ns),
                proxy: None,
            },
        };
        self.policy.publish(&self.store).await?;
        let network = self.launcher.network().clone();
        tokio::task::spawn_blocking(move || network.attach(&ns, address))
            .await
            .map_err(|e| ApiError::internal("a build's network", e))?
            .map_err(|e| ApiError::internal("a build's network", e))?;
        if let (true, Some(proxy)) = (egress, &self.build_egress) {
            net._pass = Some(proxy.grant(
                std::net::IpAddr::V4(address),
                crate::build_egress::Grant {
                    build: build.to_string(),
                    log: Some(log.to_path_buf()),
                },
            ));
            net.network.proxy = Some(format!("http://{}", proxy.addr()));
        }
        Ok(net)
    }
}

impl Drop for BuildNet {
    fn drop(&mut self) {
        // The namespace and its interfaces go first (two short `ip` runs), and only then
        // the address is free for another instance: nothing left of the build can answer
        // at an address an app gets next.
        self.platform.launcher.network().detach(&self.ns);
        self.platform.policy.forget_build(self.address);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let platform = self.platform.clone();
            handle.spawn(async move {
                if let Err(e) = platform.policy.publish(&platform.store).await {
                    tracing::warn!(error = %e.message, "publishing the network policy after a build failed");
                }
            });
        }
    }
}

/// Every address of the host's interfaces (`ip -j addr`): a build never reaches them,
/// whatever name it asks the proxy for.
pub fn host_addresses() -> Vec<std::net::IpAddr> {
    let Ok(out) = std::process::Command::new("ip")
        .args(["-j", "addr"])
        .output()
    else {
        return Vec::new();
    };
    let Ok(interfaces) = serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout) else {
        return Vec::new();
    };
    interfaces
        .iter()
        .filter_map(|i| i["addr_info"].as_array())
        .flatten()
        .filter_map(|a| a["local"].as_str()?.parse().ok())
        .collect()
}

/// What no build reaches through the proxy, whatever name it gives: the bridge's subnet
/// (the gateway and every instance), every address of the host, and `--egress-block`.
pub fn blocked(cfg: &crate::config::PlatformConfig) -> Vec<berth_edge::policy::Cidr> {
    let mut ranges = vec![cfg.subnet.to_string()];
    ranges.extend(host_addresses().into_iter().map(|a| match a {
        std::net::IpAddr::V4(v4) => format!("{v4}/32"),
        std::net::IpAddr::V6(v6) => format!("{v6}/128"),
    }));
    let mut blocked: Vec<berth_edge::policy::Cidr> =
        ranges.iter().filter_map(|r| r.parse().ok()).collect();
    blocked.extend(cfg.egress_block.iter().cloned());
    blocked
}
