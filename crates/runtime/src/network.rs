//! Container networking: one Linux bridge per berth installation on a private subnet, and
//! per instance a network namespace joined to the bridge by a veth pair. The edge on the host
//! reaches each instance at its own address on the bridge.
//!
//! Driven through iproute2's `ip` (Debian package `iproute2`): single commands, or `ip -batch`
//! runs that stop at the first failing step; every error names the command or batch that
//! failed.

use crate::RuntimeError;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A subnet such as `10.77.0.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    /// Network address.
    pub network: Ipv4Addr,
    /// Prefix length, 16 to 29.
    pub prefix: u8,
}

impl std::str::FromStr for Subnet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("subnet {s:?} must look like 10.77.0.0/24"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("subnet {s:?}: {addr:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| format!("subnet {s:?}: bad prefix length"))?;
        if !(16..=29).contains(&prefix) {
            return Err(format!("subnet {s:?}: prefix must be between /16 and /29"));
        }
        if !addr.is_private() {
            return Err(format!("subnet {s:?} must be a private (RFC 1918) range"));
        }
        let mask = u32::MAX << (32 - prefix);
        Ok(Self {
            network: Ipv4Addr::from(u32::from(addr) & mask),
            prefix,
        })
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Subnet {
    /// The bridge's own address: the first host address.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    /// Addresses available to instances (all host addresses but the gateway).
    pub fn instance_addresses(&self) -> impl Iterator<Item = Ipv4Addr> {
        let base = u32::from(self.network);
        let size = 1u32 << (32 - self.prefix);
        (2..size - 1).map(move |i| Ipv4Addr::from(base + i))
    }
}

/// berth's bridge and the namespaces attached to it.
#[derive(Debug, Clone)]
pub struct Network {
    /// Bridge interface name (≤ 15 characters).
    pub bridge: String,
    /// Subnet of the bridge.
    pub subnet: Subnet,
}

/// Runs `ip ARGS`; errors name the command and its output.
fn run(args: &[&str]) -> Result<(), RuntimeError> {
    let program = "ip";
    let out = Command::new(program).args(args).output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            RuntimeError::MissingBinary {
                binary: program,
                package: "iproute2",
            }
        } else {
            RuntimeError::Network {
                command: format!("{program} {}", args.join(" ")),
                message: e.to_string(),
            }
        }
    })?;
    checked(format!("{program} {}", args.join(" ")), &out)
}

/// A namespace whose interfaces are being configured (see [`Network::begin_attach`]).
#[must_use = "finish() reports whether the namespace got its address and route"]
pub struct PendingAttach {
    network: Network,
    ns: String,
    host_if: String,
    batch: Batch,
}

impl PendingAttach {
    /// The namespace's path (it exists already).
    pub fn path(&self) -> PathBuf {
        Network::netns_path(&self.ns)
    }

    /// Waits until the namespace has its address and default route; on failure removes it.
    pub fn finish(self) -> Result<PathBuf, RuntimeError> {
        match self.batch.wait() {
            Ok(()) => Ok(Network::netns_path(&self.ns)),
            Err(e) => {
                self.network.detach(&self.ns);
                let _ = run(&["link", "del", &self.host_if]);
                Err(e)
            }
        }
    }
}

/// An `ip -batch` run in progress.
struct Batch {
    child: std::process::Child,
    describe: String,
}

impl Batch {
    /// Starts `ip [global] -batch -` with `steps` (one command per line).
    fn spawn(global: &[&str], steps: &str) -> Result<Self, RuntimeError> {
        use std::io::Write;
        let describe = format!(
            "ip {} -batch: {}",
            global.join(" "),
            steps.replace('\n', "; ")
        );
        let failed = |message: String| RuntimeError::Network {
            command: describe.clone(),
            message,
        };
        let mut child = Command::new("ip")
            .args(global)
            .args(["-batch", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    RuntimeError::MissingBinary {
                        binary: "ip",
                        package: "iproute2",
                    }
                } else {
                    failed(e.to_string())
                }
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(steps.as_bytes())
                .map_err(|e| failed(e.to_string()))?;
        }
        Ok(Self { child, describe })
    }

    /// Waits for it; it stops at the first failing step, and the error names it.
    fn wait(self) -> Result<(), RuntimeError> {
        let out = self
            .child
            .wait_with_output()
            .map_err(|e| RuntimeError::Network {
                command: self.describe.clone(),
                message: e.to_string(),
            })?;
        checked(self.describe, &out)
    }
}

/// Runs `ip [global] -batch -` with `steps` to the end.
fn run_batch(global: &[&str], steps: &str) -> Result<(), RuntimeError> {
    Batch::spawn(global, steps)?.wait()
}

/// `Ok` if a network command succeeded, else an error naming it with what it printed.
fn checked(command: String, out: &std::process::Output) -> Result<(), RuntimeError> {
    if out.status.success() {
        Ok(())
    } else {
        Err(RuntimeError::Network {
            command,
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// A stable short hash for interface names (FNV-1a).
fn short_hash(s: &str) -> String {
    let mut h: u32 = 0x811c9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x01000193);
    }
    format!("{h:08x}")
}

/// A locally administered unicast MAC address of its own for bridge `name`.
fn bridge_mac(name: &str) -> String {
    let h = short_hash(name);
    format!("02:be:{}:{}:{}:{}", &h[0..2], &h[2..4], &h[4..6], &h[6..8])
}

impl Network {
    /// Gives the bridge a fixed MAC address. A Linux bridge left to itself takes the lowest
    /// MAC of its ports and changes it when that port goes: every instance would then send
    /// to the gateway's old address until its ARP entry expires (some 30 s in which no
    /// answer reaches the edge). A new bridge gets an address derived from its name; one
    /// made by an older berth keeps the address it has now.
    fn pin_bridge_address(&self) -> Result<(), RuntimeError> {
        let sys = format!("/sys/class/net/{}", self.bridge);
        // 3: NET_ADDR_SET, an address given by hand, which the bridge keeps.
        let pinned = std::fs::read_to_string(format!("{sys}/addr_assign_type"))
            .is_ok_and(|t| t.trim() == "3");
        if pinned {
            return Ok(());
        }
        let ports = std::fs::read_dir(format!("{sys}/brif"))
            .map(|d| d.count())
            .unwrap_or(0);
        let mac = match std::fs::read_to_string(format!("{sys}/address")) {
            Ok(current) if ports > 0 => current.trim().to_string(),
            _ => bridge_mac(&self.bridge),
        };
        run(&["link", "set", "dev", &self.bridge, "address", &mac])
    }

    /// Checks a bridge name: an interface name of 1 to 15 letters, digits, `-` or `_`.
    pub fn validate_bridge_name(name: &str) -> Result<(), String> {
        if name.is_empty()
            || name.len() > 15
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "bridge name {name:?} must be 1 to 15 letters, digits, '-' or '_'"
            ));
        }
        Ok(())
    }

    /// Creates the bridge with its gateway address if it does not exist yet; returns whether
    /// it created it (so that a start that fails later can remove it again).
    pub fn ensure_bridge(&self) -> Result<bool, RuntimeError> {
        let exists = Command::new("ip")
            .args(["link", "show", "dev", &self.bridge])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !exists {
            run(&["link", "add", "name", &self.bridge, "type", "bridge"])?;
        }
        self.pin_bridge_address()?;
        let gw = format!("{}/{}", self.subnet.gateway(), self.subnet.prefix);
        let has_addr = Command::new("ip")
            .args(["-4", "addr", "show", "dev", &self.bridge])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains(&gw))
            .unwrap_or(false);
        if !has_addr {
            run(&["addr", "add", &gw, "dev", &self.bridge])?;
        }
        // Ports are isolated from each other (see `attach`); the bridge answers ARP for the
        // whole subnet and routes between apps, so app-to-app traffic meets the firewall.
        // Forwarding also carries app egress.
        for (key, value) in [
            (format!("net/ipv4/conf/{}/proxy_arp", self.bridge), "1"),
            (
                format!("net/ipv4/conf/{}/proxy_arp_pvlan", self.bridge),
                "1",
            ),
            ("net/ipv4/ip_forward".to_string(), "1"),
            // No ICMP redirects: routing app to app through the host is deliberate, and a
            // redirect would use up the rate limit of the "administratively prohibited"
            // answer the firewall sends, so a denied connection would hang, not fail at
            // once. (A redirect is sent if either `all` or the interface asks for it.)
            (format!("net/ipv4/conf/{}/send_redirects", self.bridge), "0"),
            ("net/ipv4/conf/all/send_redirects".to_string(), "0"),
        ] {
            let path = PathBuf::from("/proc/sys").join(&key);
            std::fs::write(&path, value).map_err(|e| RuntimeError::Network {
                command: format!("sysctl {}={value}", key.replace('/', ".")),
                message: e.to_string(),
            })?;
        }
        run(&["link", "set", "dev", &self.bridge, "up"])?;
        Ok(!exists)
    }

    /// Path of a namespace created by [`Network::attach`].
    pub fn netns_path(ns: &str) -> PathBuf {
        PathBuf::from("/var/run/netns").join(ns)
    }

    /// Creates namespace `ns` with `eth0` at `addr` on the bridge and a default route via
    /// the gateway. Replaces a leftover namespace of the same name.
    ///
    /// Two `ip -batch` runs (one on the host, one in the namespace) do all the steps: a
    /// start pays for two processes, not ten. The port is isolated before it comes up, so
    /// no frame ever passes app to app directly.
    pub fn attach(&self, ns: &str, addr: Ipv4Addr) -> Result<PathBuf, RuntimeError> {
        self.begin_attach(ns, addr)?.finish()
    }

    /// [`Network::attach`] in two halves: returns once the namespace exists and is joined
    /// to the bridge, while its interfaces are still being configured; a container may
    /// start in it meanwhile if its init waits for the default route (see
    /// [`crate::init::wait_for_default_route`]). [`PendingAttach::finish`] waits for the
    /// rest.
    pub fn begin_attach(&self, ns: &str, addr: Ipv4Addr) -> Result<PendingAttach, RuntimeError> {
        self.detach(ns);
        let hash = short_hash(ns);
        let host_if = format!("bh{hash}");
        // Deleting the namespace frees its veth pair only once nothing holds the namespace:
        // a crashed gVisor sandbox may still be exiting. Deleting the host end takes the
        // pair away at once, so the restart does not meet "File exists".
        if Path::new("/sys/class/net").join(&host_if).exists() {
            let _ = run(&["link", "del", &host_if]);
        }
        let bridge = &self.bridge;
        // The peer is created inside the namespace: moving an interface between namespaces
        // costs the kernel tens of milliseconds, creating it there costs nothing extra.
        // The address may have belonged to an earlier instance: its old MAC is flushed, or
        // the host keeps sending to it until the stale neighbour entry times out (seconds).
        let host_steps = format!(
            "netns add {ns}\n\
             link add {host_if} type veth peer name eth0 netns {ns}\n\
             link set {host_if} master {bridge}\n\
             link set dev {host_if} type bridge_slave isolated on\n\
             link set {host_if} up\n\
             neigh flush to {addr} dev {bridge}\n"
        );
        let ns_steps = format!(
            "addr add {addr}/{prefix} dev eth0\n\
             link set eth0 up\n\
             link set lo up\n\
             route add default via {gw}\n",
            prefix = self.subnet.prefix,
            gw = self.subnet.gateway(),
        );
        let configuring =
            run_batch(&[], &host_steps).and_then(|_| Batch::spawn(&["-n", ns], &ns_steps));
        match configuring {
            Ok(batch) => Ok(PendingAttach {
                network: self.clone(),
                ns: ns.to_string(),
                host_if,
                batch,
            }),
            Err(e) => {
                self.detach(ns);
                let _ = run(&["link", "del", &host_if]);
                Err(e)
            }
        }
    }

    /// Removes namespace `ns` and its veth pair (the host's end too: a process still
    /// holding the namespace would otherwise keep the pair, and its address, on the
    /// bridge). Idempotent.
    pub fn detach(&self, ns: &str) {
        if Self::netns_path(ns).exists() {
            let _ = run(&["netns", "del", ns]);
        }
        let host_if = format!("bh{}", short_hash(ns));
        if Path::new("/sys/class/net").join(&host_if).exists() {
            let _ = run(&["link", "del", &host_if]);
        }
    }

    /// Removes the bridge (used when a test platform is torn down).
    pub fn remove_bridge(&self) {
        let _ = run(&["link", "del", &self.bridge]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_subnets_and_hands_out_addresses() {
        let s: Subnet = "10.77.0.9/24".parse().unwrap();
        assert_eq!(s.to_string(), "10.77.0.0/24");
        assert_eq!(s.gateway(), Ipv4Addr::new(10, 77, 0, 1));
        let addrs: Vec<_> = s.instance_addresses().collect();
        assert_eq!(addrs.first(), Some(&Ipv4Addr::new(10, 77, 0, 2)));
        assert_eq!(addrs.last(), Some(&Ipv4Addr::new(10, 77, 0, 254)));
        assert_eq!(addrs.len(), 253);
    }

    #[test]
    fn refuses_public_and_malformed_subnets() {
        assert!("8.8.8.0/24".parse::<Subnet>().is_err());
        assert!("10.0.0.0/8".parse::<Subnet>().is_err());
        assert!("10.0.0.0".parse::<Subnet>().is_err());
        assert!("banana/24".parse::<Subnet>().is_err());
    }

    #[test]
    fn a_bridge_gets_a_local_unicast_address_of_its_own() {
        let mac = bridge_mac("berth0");
        assert_eq!(mac.len(), 17);
        assert!(
            mac.starts_with("02:"),
            "locally administered, unicast: {mac}"
        );
        assert_eq!(mac, bridge_mac("berth0"));
        assert_ne!(mac, bridge_mac("berth1"));
    }

    #[test]
    fn interface_names_fit_the_kernel_limit() {
        let h = short_hash("a-very-long-app-name-v123-worker-15-abcdef");
        assert!(format!("bh{h}").len() <= 15);
        assert_eq!(h, short_hash("a-very-long-app-name-v123-worker-15-abcdef"));
        assert!(Network::validate_bridge_name("berth0").is_ok());
        assert!(Network::validate_bridge_name("this-is-too-long-x").is_err());
    }
}
