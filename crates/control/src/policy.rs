//! Publishes the network policy: computed from the state store (each app's instance
//! addresses and its newest release's `[network]` settings) plus the short-lived containers
//! that act for an app (its release command), and handed to the runtime's nftables
//! firewall, which replaces its rules atomically. Fails closed: when the rules cannot be
//! applied, the caller's deploy or restart fails.

use crate::store::Store;
use berth_core::model::InstanceState;
use berth_core::policy::NetworkPolicy;
use berth_runtime::firewall::{AppRules, Firewall};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// Keeps the firewall in step with the store.
#[derive(Debug)]
pub struct PolicyPublisher {
    firewall: Firewall,
    lock: tokio::sync::Mutex<()>,
    /// Containers that are not instances but act for an app: (app, release, address).
    transient: std::sync::Mutex<Vec<(String, u32, Ipv4Addr)>>,
    /// Addresses a sleeping app's instances had, kept in its rules and from other
    /// instances until it wakes: (app, release, address).
    reserved: std::sync::Mutex<Vec<(String, u32, Ipv4Addr)>>,
    /// Builds under way, each in its own namespace: (build id, address). They reach the
    /// build proxy and nothing else.
    builds: std::sync::Mutex<Vec<(String, Ipv4Addr)>>,
}

impl PolicyPublisher {
    /// A publisher driving `firewall`.
    pub fn new(firewall: Firewall) -> Self {
        Self {
            firewall,
            lock: tokio::sync::Mutex::new(()),
            transient: std::sync::Mutex::new(Vec::new()),
            reserved: std::sync::Mutex::new(Vec::new()),
            builds: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Counts the build `build` at `address` until [`PolicyPublisher::forget_build`]: it
    /// reaches the build proxy, nothing else. Takes effect at the next publish.
    pub fn add_build(&self, build: &str, address: Ipv4Addr) {
        if let Ok(mut b) = self.builds.lock() {
            b.push((build.to_string(), address));
        }
    }

    /// Stops counting the build at `address`.
    pub fn forget_build(&self, address: Ipv4Addr) {
        if let Ok(mut b) = self.builds.lock() {
            b.retain(|(_, a)| *a != address);
        }
    }

    /// Counts the container at `address` as one of `app`'s (release `release`) until
    /// [`PolicyPublisher::forget`]: it gets the app's allow rules and egress policy. Takes
    /// effect at the next publish.
    pub fn add_transient(&self, app: &str, release: u32, address: Ipv4Addr) {
        if let Ok(mut t) = self.transient.lock() {
            t.push((app.to_string(), release, address));
        }
    }

    /// Stops counting the container at `address`.
    pub fn forget(&self, address: Ipv4Addr) {
        if let Ok(mut t) = self.transient.lock() {
            t.retain(|(_, _, a)| *a != address);
        }
    }

    /// Keeps `address`, where an instance of `app` (release `release`) ran before the app
    /// went to sleep, in the app's rules and from other instances, until
    /// [`PolicyPublisher::take_reserved`]: the app wakes at the same address, under the
    /// rules already in force.
    pub fn reserve(&self, app: &str, release: u32, address: Ipv4Addr) {
        if let Ok(mut r) = self.reserved.lock() {
            r.push((app.to_string(), release, address));
        }
    }

    /// Hands back (and forgets) the addresses reserved for `app`, with their release.
    pub fn take_reserved(&self, app: &str) -> Vec<(u32, Ipv4Addr)> {
        let Ok(mut r) = self.reserved.lock() else {
            return Vec::new();
        };
        let (mine, others) = std::mem::take(&mut *r)
            .into_iter()
            .partition::<Vec<_>, _>(|(a, _, _)| a == app);
        *r = others;
        mine.into_iter().map(|(_, rel, addr)| (rel, addr)).collect()
    }

    /// Addresses held by transient containers and sleeping apps (not free for new
    /// instances).
    pub fn transient_addresses(&self) -> Vec<String> {
        let held = |list: &std::sync::Mutex<Vec<(String, u32, Ipv4Addr)>>| {
            list.lock()
                .map(|t| t.iter().map(|(_, _, a)| a.to_string()).collect::<Vec<_>>())
                .unwrap_or_default()
        };
        let mut all = held(&self.transient);
        all.extend(held(&self.reserved));
        if let Ok(b) = self.builds.lock() {
            all.extend(b.iter().map(|(_, a)| a.to_string()));
        }
        all
    }

    /// Computes the rules from the store and applies them. An app's `allow` reaches an
    /// app of another project only while that app's serving rules accept it: checked here,
    /// at every publish, as well as at deploy, so a change on either side takes effect.
    pub async fn publish(&self, store: &Store) -> Result<(), crate::ApiError> {
        let _guard = self.lock.lock().await;
        let mut by_app: BTreeMap<String, (u32, Vec<Ipv4Addr>)> = BTreeMap::new();
        for inst in store.instances(None).await? {
            if inst.state == InstanceState::Stopped {
                continue;
            }
            let entry = by_app.entry(inst.app.clone()).or_insert((0, Vec::new()));
            entry.0 = entry.0.max(inst.release);
            if let Ok(addr) = inst.address.parse() {
                entry.1.push(addr);
            }
        }
        let mut transient = self.transient.lock().map(|t| t.clone()).unwrap_or_default();
        transient.extend(self.reserved.lock().map(|r| r.clone()).unwrap_or_default());
        for (app, release, addr) in transient {
            let entry = by_app.entry(app).or_insert((0, Vec::new()));
            entry.0 = entry.0.max(release);
            // A sleeping app's instance may still be stopping at its reserved address.
            if !entry.1.contains(&addr) {
                entry.1.push(addr);
            }
        }
        let databases = store.databases().await?;
        let mut running = Vec::new();
        let mut members: BTreeMap<String, (String, NetworkPolicy)> = BTreeMap::new();
        for (app, (newest, addresses)) in by_app {
            let network = store
                .release(&app, newest)
                .await?
                .map(|r| r.config.network)
                .unwrap_or_default();
            let project = store.app_project(&app).await?.unwrap_or_default();
            members.insert(app.clone(), (project, network));
            running.push((app, addresses));
        }
        let mut rules = Vec::new();
        for (app, addresses) in running {
            let Some((project, network)) = members.get(&app) else {
                continue;
            };
            rules.push(AppRules {
                database: databases.contains_key(&app),
                allow: reachable(&app, project, &network.allow, &members),
                name: app,
                addresses,
                egress: network.egress,
                egress_allow: network.egress_allow.clone(),
                build: false,
            });
        }
        let builds = self.builds.lock().map(|b| b.clone()).unwrap_or_default();
        for (build, address) in builds {
            rules.push(AppRules {
                name: format!("build-{build}"),
                addresses: vec![address],
                allow: Vec::new(),
                egress: berth_core::policy::EgressMode::None,
                egress_allow: Vec::new(),
                database: false,
                build: true,
            });
        }
        let fw = self.firewall.clone();
        tokio::task::spawn_blocking(move || fw.apply(&rules))
            .await
            .map_err(|e| crate::ApiError::internal("applying the network policy", e))?
            .map_err(|e| crate::ApiError::internal("applying the network policy", e))
    }
}

/// The apps of `allow` that `app` (of `project`) may reach: those of its own project, and
/// those of other projects whose `accept_from` names it.
fn reachable(
    app: &str,
    project: &str,
    allow: &[String],
    members: &BTreeMap<String, (String, NetworkPolicy)>,
) -> Vec<String> {
    allow
        .iter()
        .filter(|target| match members.get(target.as_str()) {
            Some((of, policy)) => policy.accepts(of, project, app),
            // Not running: nothing to reach until it runs, and then it is published again.
            None => false,
        })
        .cloned()
        .collect()
}
