//! A lab network for tests and benchmarks that play many machines on one:
//! `N` network namespaces (`<prefix>0`, `<prefix>1`, ...), each joined to
//! one host bridge by a veth pair, each link shaped to a rate in both
//! directions with `tc qdisc ... tbf`.
//!
//! ```text
//!  host namespace: bridge <prefix>br0 = 10.123.0.1/16 (the server listens here)
//!     |-- <prefix>h0 ==veth== <prefix>n0 in namespace <prefix>0 = 10.123.1.1/16
//!     |-- <prefix>h1 ==veth== <prefix>n1 in namespace <prefix>1 = 10.123.1.2/16
//!     ...
//! ```
//!
//! Shaping: the host end's egress is what flows *into* a machine, the
//! machine end's egress what flows *out* of it, so each machine has its own
//! download and upload limit, like a real NIC, while machines reach each
//! other and the host over the bridge. Run processes inside with
//! [`LabMachine::command`] (`nsenter --net=...`, which, unlike `ip netns
//! exec`, keeps the host's `/sys` and with it the cgroup hierarchy runc needs).
//!
//! Everything is named with the lab's prefix, so [`LabNetwork::create`]
//! first removes what a killed run of the same prefix left, and dropping
//! the lab removes it all (blocking `ip` calls: a harness, not the agent).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use crate::spec::{NETNS_DIR, validate_ifname, validate_netns_name};
use crate::{Ipv4Cidr, NetError, ip};

/// What a [`LabNetwork`] is made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabSpec {
    /// The prefix of every namespace and link the lab creates (at most 6
    /// characters, so that `<prefix>h<index>` fits an interface name).
    pub prefix: String,
    /// The host's address on the bridge, with the lab's prefix length;
    /// machines get the addresses after `machine_base`.
    pub host: Ipv4Cidr,
    /// The first machine's address (machine `i` has `machine_base + i`).
    pub machine_base: Ipv4Addr,
    /// How many machines.
    pub machines: usize,
    /// Each link's rate in bytes per second, in each direction; `None`
    /// leaves the links unshaped.
    pub rate_bytes_per_second: Option<u64>,
}

impl LabSpec {
    /// A lab on `10.<second_octet>.0.0/16`: the host at `10.<second_octet>.0.1`,
    /// machines from `10.<second_octet>.1.1`.
    ///
    /// ```
    /// use wharf_net::lab::LabSpec;
    /// let spec = LabSpec::on_ten_slash_16("wpx", 200, 4, None);
    /// assert_eq!(spec.host.to_string(), "10.200.0.1/16");
    /// assert_eq!(spec.machine_base.to_string(), "10.200.1.1");
    /// ```
    pub fn on_ten_slash_16(
        prefix: &str,
        second_octet: u8,
        machines: usize,
        rate_bytes_per_second: Option<u64>,
    ) -> LabSpec {
        LabSpec {
            prefix: prefix.into(),
            host: Ipv4Cidr::new(Ipv4Addr::new(10, second_octet, 0, 1), 16),
            machine_base: Ipv4Addr::new(10, second_octet, 1, 1),
            machines,
            rate_bytes_per_second,
        }
    }

    /// The lab the P2P show and benchmark use: prefix `wpp`, the host at
    /// 10.123.0.1/16, machines from 10.123.1.1.
    pub fn wpp(machines: usize, rate_bytes_per_second: Option<u64>) -> LabSpec {
        LabSpec::on_ten_slash_16("wpp", 123, machines, rate_bytes_per_second)
    }

    /// The lab of the P2P fault shows (a corrupt peer, a seed killed
    /// mid-download): prefix `wpf`, the host at 10.126.0.1/16, machines
    /// from 10.126.1.1; apart from the `wpp` show, so both can run at once.
    pub fn wpf(machines: usize, rate_bytes_per_second: Option<u64>) -> LabSpec {
        LabSpec::on_ten_slash_16("wpf", 126, machines, rate_bytes_per_second)
    }

    /// The bridge's name: `<prefix>br0`.
    pub fn bridge(&self) -> String {
        format!("{}br0", self.prefix)
    }

    /// Checks names, addresses and the rate before anything is created.
    pub fn validate(&self) -> Result<(), NetError> {
        let invalid = |reason: String| Err(NetError::InvalidConfig(reason));
        if self.prefix.is_empty() || self.prefix.len() > 6 {
            return invalid(format!(
                "lab prefix {:?} must have 1 to 6 characters",
                self.prefix
            ));
        }
        validate_netns_name("lab prefix", &self.prefix)?;
        validate_ifname("lab bridge", &self.bridge())?;
        if self.machines == 0 {
            return invalid("a lab needs at least one machine".into());
        }
        let last = u32::from(self.machine_base) as u64 + self.machines as u64 - 1;
        let fits = last <= u32::MAX as u64
            && self.host.contains(self.machine_base)
            && self.host.contains(Ipv4Addr::from(last as u32))
            && Ipv4Addr::from(last as u32) != self.host.broadcast();
        let host_inside =
            (u32::from(self.machine_base)..=last as u32).contains(&u32::from(self.host.addr));
        if !fits || host_inside {
            return invalid(format!(
                "{} machines from {} do not fit in {} beside the host's address",
                self.machines, self.machine_base, self.host
            ));
        }
        validate_ifname(
            "lab link",
            &format!("{}h{}", self.prefix, self.machines - 1),
        )?;
        if self.rate_bytes_per_second == Some(0) {
            return invalid("a lab link's rate must be above 0 bytes/s".into());
        }
        Ok(())
    }
}

/// One machine of a [`LabNetwork`]: a network namespace on the bridge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabMachine {
    /// Its index in the lab.
    pub index: usize,
    /// The namespace's name, `<prefix><index>`.
    pub netns: String,
    /// Its address on the bridge.
    pub address: Ipv4Addr,
    /// The host end of its link, `<prefix>h<index>`.
    pub host_veth: String,
    /// Its own end, `<prefix>n<index>`.
    pub veth: String,
}

impl LabMachine {
    /// Where the namespace is mounted (`/var/run/netns/<name>`).
    pub fn netns_path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.netns)
    }

    /// A command that runs `program` inside the machine, through
    /// `nsenter --net=<path>` (only the network namespace changes).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> tokio::process::Command {
        let mut command = tokio::process::Command::new("nsenter");
        command
            .arg(format!("--net={}", self.netns_path().display()))
            .arg(program);
        command
    }

    /// The same as [`command`](Self::command), for synchronous callers.
    pub fn std_command(&self, program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
        let mut command = std::process::Command::new("nsenter");
        command
            .arg(format!("--net={}", self.netns_path().display()))
            .arg(program);
        command
    }
}

/// The namespaces, links and bridge of a lab; removed on drop.
#[derive(Debug)]
pub struct LabNetwork {
    spec: LabSpec,
    machines: Vec<LabMachine>,
}

impl LabNetwork {
    /// Removes what an earlier run with `spec`'s prefix left, then creates
    /// the bridge and every machine. A failure removes what was created.
    pub async fn create(spec: LabSpec) -> Result<LabNetwork, NetError> {
        spec.validate()?;
        remove_leftovers(&spec.prefix);
        // From here on, dropping `lab` (also on an early return) cleans up.
        let mut lab = LabNetwork {
            spec,
            machines: Vec::new(),
        };
        let bridge = lab.spec.bridge();
        let host = lab.spec.host.to_string();
        ip::run("ip", ["link", "add", "name", &bridge, "type", "bridge"]).await?;
        ip::run("ip", ["addr", "add", &host, "dev", &bridge]).await?;
        ip::run("ip", ["link", "set", "dev", &bridge, "up"]).await?;
        for index in 0..lab.spec.machines {
            let machine = lab.machine_named(index);
            lab.machines.push(machine.clone());
            lab.plumb(&machine).await?;
        }
        Ok(lab)
    }

    fn machine_named(&self, index: usize) -> LabMachine {
        let prefix = &self.spec.prefix;
        LabMachine {
            index,
            netns: format!("{prefix}{index}"),
            address: Ipv4Addr::from(u32::from(self.spec.machine_base) + index as u32),
            host_veth: format!("{prefix}h{index}"),
            veth: format!("{prefix}n{index}"),
        }
    }

    async fn plumb(&self, machine: &LabMachine) -> Result<(), NetError> {
        let netns = machine.netns.as_str();
        let (outside, inside) = (machine.host_veth.as_str(), machine.veth.as_str());
        let address = Ipv4Cidr::new(machine.address, self.spec.host.prefix_len).to_string();
        let bridge = self.spec.bridge();
        ip::run("ip", ["netns", "add", netns]).await?;
        ip::run(
            "ip",
            [
                "link", "add", "name", outside, "type", "veth", "peer", "name", inside, "netns",
                netns,
            ],
        )
        .await?;
        ip::run("ip", ["link", "set", "dev", outside, "master", &bridge]).await?;
        ip::run("ip", ["link", "set", "dev", outside, "up"]).await?;
        ip::run("ip", ["-n", netns, "link", "set", "dev", "lo", "up"]).await?;
        ip::run("ip", ["-n", netns, "addr", "add", &address, "dev", inside]).await?;
        ip::run("ip", ["-n", netns, "link", "set", "dev", inside, "up"]).await?;
        if let Some(rate) = self.spec.rate_bytes_per_second {
            shape(machine, rate).await?;
        }
        Ok(())
    }

    /// Shapes machine `index`'s link to `rate` bytes per second in each
    /// direction from now on, replacing what it had: one machine with a
    /// slower (or faster) NIC than the rest of the lab.
    pub async fn set_rate(&self, index: usize, rate: u64) -> Result<(), NetError> {
        let machine = self.machines.get(index).ok_or_else(|| {
            NetError::InvalidConfig(format!(
                "lab machine {index} does not exist: the lab has {} machines",
                self.machines.len()
            ))
        })?;
        if rate == 0 {
            return Err(NetError::InvalidConfig(format!(
                "lab machine {index}: a link's rate must be above 0 bytes/s"
            )));
        }
        shape(machine, rate).await
    }

    /// What the lab was made from.
    pub fn spec(&self) -> &LabSpec {
        &self.spec
    }

    /// The machines, by index.
    pub fn machines(&self) -> &[LabMachine] {
        &self.machines
    }

    /// The host's address on the bridge: what machines reach the host at.
    pub fn host_address(&self) -> Ipv4Addr {
        self.spec.host.addr
    }
}

impl Drop for LabNetwork {
    fn drop(&mut self) {
        remove_leftovers(&self.spec.prefix);
    }
}

/// Shapes both ends of `machine`'s link to `rate` bytes/s (`tc qdisc
/// replace`: the same whether the link was shaped before or not).
async fn shape(machine: &LabMachine, rate: u64) -> Result<(), NetError> {
    for command in shaping_commands(machine, rate) {
        ip::run("tc", command).await?;
    }
    Ok(())
}

/// The `tc` arguments that shape the host end (what flows into the
/// machine) and the machine's own end (what flows out of it).
fn shaping_commands(machine: &LabMachine, rate: u64) -> [Vec<String>; 2] {
    let tbf = tbf_args(rate);
    let replace = |dev: &str| {
        let mut args: Vec<String> = ["qdisc", "replace", "dev", dev, "root"]
            .map(String::from)
            .to_vec();
        args.extend(tbf.iter().cloned());
        args
    };
    let host_side = replace(&machine.host_veth);
    let mut machine_side = vec!["-n".to_string(), machine.netns.clone()];
    machine_side.extend(replace(&machine.veth));
    [host_side, machine_side]
}

/// `tbf` parameters for `rate` bytes/s. The bucket holds 20 ms of the rate
/// but at least 256 KiB: veths pass GSO packets of up to 64 KiB, and tbf
/// drops any packet larger than its bucket.
fn tbf_args(rate: u64) -> Vec<String> {
    let burst = (rate / 50).max(256 << 10);
    vec![
        "tbf".into(),
        "rate".into(),
        format!("{}bit", rate.saturating_mul(8)),
        "burst".into(),
        burst.to_string(),
        "latency".into(),
        "100ms".into(),
    ]
}

/// Deletes every namespace named `<prefix><digits>` and every link of the
/// host namespace named `<prefix>h<digits>` or `<prefix>br0`: a lab's own
/// names, whether this run made them or a killed one did. Namespaces of
/// the lab's machines' own pods (`<prefix><digits>p-...`) go too.
pub fn remove_leftovers(prefix: &str) {
    let namespaces: Vec<String> = std::fs::read_dir(NETNS_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str().map(str::to_owned))
        .filter(|name| is_lab_netns(prefix, name))
        .collect();
    for name in namespaces {
        report(ip::run_blocking("ip", &["netns", "delete", &name]));
    }
    let links = std::fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str().map(str::to_owned))
        .filter(|name| is_lab_link(prefix, name))
        .collect::<Vec<_>>();
    for link in links {
        report(ip::run_blocking("ip", &["link", "delete", "dev", &link]));
    }
}

/// `<prefix><digits>`, optionally followed by `p-<anything>` (a machine's pods).
fn is_lab_netns(prefix: &str, name: &str) -> bool {
    let Some(rest) = name.strip_prefix(prefix) else {
        return false;
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    digits > 0 && (rest.len() == digits || rest[digits..].starts_with("p-"))
}

/// `<prefix>br0` or `<prefix>h<digits>`.
fn is_lab_link(prefix: &str, name: &str) -> bool {
    let Some(rest) = name.strip_prefix(prefix) else {
        return false;
    };
    rest == "br0"
        || rest
            .strip_prefix('h')
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn report(result: Result<(), NetError>) {
    match result {
        Err(NetError::Command { stderr, .. })
            if stderr.contains("No such file")
                || stderr.contains("Cannot find device")
                || stderr.contains("does not exist") => {}
        Err(error) => tracing::warn!(%error, "lab network cleanup"),
        Ok(()) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wpp_lab_is_valid_and_its_machines_are_numbered_after_the_host() {
        let spec = LabSpec::wpp(300, Some(10 << 20));
        spec.validate().unwrap();
        assert_eq!(spec.bridge(), "wppbr0");
        let lab = LabNetwork {
            spec,
            machines: Vec::new(),
        };
        let machine = lab.machine_named(299);
        assert_eq!(machine.netns, "wpp299");
        assert_eq!(machine.address, Ipv4Addr::new(10, 123, 2, 44));
        assert_eq!(machine.host_veth, "wpph299");
        assert_eq!(
            machine.netns_path(),
            Path::new("/var/run/netns/wpp299").to_path_buf()
        );
        // The drop must not touch the machine's network: nothing was created.
        std::mem::forget(lab);
    }

    #[test]
    fn bad_specs_are_refused_naming_what_is_wrong() {
        let mut spec = LabSpec::wpp(1, Some(0));
        let error = spec.validate().unwrap_err().to_string();
        assert!(error.contains("rate"), "{error}");
        spec.rate_bytes_per_second = None;
        spec.machines = 70_000;
        let error = spec.validate().unwrap_err().to_string();
        assert!(error.contains("do not fit in 10.123.0.1/16"), "{error}");
        spec.machines = 2;
        spec.prefix = "toolong".into();
        let error = spec.validate().unwrap_err().to_string();
        assert!(error.contains("1 to 6 characters"), "{error}");
        spec.prefix = "wpp".into();
        spec.machine_base = Ipv4Addr::new(10, 123, 0, 0);
        let error = spec.validate().unwrap_err().to_string();
        assert!(error.contains("beside the host's address"), "{error}");
    }

    #[test]
    fn leftovers_are_recognised_by_the_lab_names_only() {
        assert!(is_lab_netns("wpp", "wpp0"));
        assert!(is_lab_netns("wpp", "wpp17"));
        assert!(is_lab_netns("wpp", "wpp17p-3f9a0c2b7d1e"));
        assert!(!is_lab_netns("wpp", "wpp"));
        assert!(!is_lab_netns("wpp", "wppx1"));
        assert!(!is_lab_netns("wpp", "wharf-1"));
        assert!(!is_lab_netns("wpp", "wpp1-other"));
        assert!(is_lab_link("wpp", "wppbr0"));
        assert!(is_lab_link("wpp", "wpph12"));
        assert!(!is_lab_link("wpp", "wppn12"));
        assert!(!is_lab_link("wpp", "wpph"));
        assert!(!is_lab_link("wpp", "eth0"));
    }

    #[test]
    fn the_wpf_lab_is_apart_from_the_wpp_lab() {
        let wpf = LabSpec::wpf(6, None);
        wpf.validate().unwrap();
        assert_eq!(wpf.bridge(), "wpfbr0");
        assert_eq!(wpf.host, Ipv4Cidr::new(Ipv4Addr::new(10, 126, 0, 1), 16));
        assert_eq!(wpf.machine_base, Ipv4Addr::new(10, 126, 1, 1));
        let wpp = LabSpec::wpp(6, None);
        assert!(!wpp.host.contains(wpf.machine_base));
        assert!(!is_lab_netns("wpp", "wpf0") && !is_lab_link("wpp", "wpfbr0"));
    }

    #[test]
    fn a_reshaped_link_replaces_the_qdisc_on_both_ends() {
        let lab = LabNetwork {
            spec: LabSpec::wpf(2, Some(32 << 20)),
            machines: Vec::new(),
        };
        let machine = lab.machine_named(1);
        let [host_side, machine_side] = shaping_commands(&machine, 2 << 20);
        assert_eq!(
            host_side[..5],
            ["qdisc", "replace", "dev", "wpfh1", "root"].map(String::from)
        );
        assert_eq!(host_side[5..], tbf_args(2 << 20)[..]);
        assert_eq!(
            machine_side[..7],
            ["-n", "wpf1", "qdisc", "replace", "dev", "wpfn1", "root"].map(String::from)
        );
        assert_eq!(machine_side[7..], tbf_args(2 << 20)[..]);
        std::mem::forget(lab);
    }

    #[tokio::test]
    async fn reshaping_a_machine_the_lab_lacks_is_refused() {
        let lab = LabNetwork {
            spec: LabSpec::wpf(2, None),
            machines: Vec::new(),
        };
        let error = lab.set_rate(3, 1 << 20).await.unwrap_err().to_string();
        assert!(error.contains("lab machine 3 does not exist"), "{error}");
        std::mem::forget(lab);
    }

    #[test]
    fn the_bucket_holds_a_gso_packet_and_20_ms() {
        assert_eq!(tbf_args(1 << 20)[2], "8388608bit");
        assert_eq!(tbf_args(1 << 20)[4], (256 << 10).to_string());
        assert_eq!(tbf_args(1 << 30)[4], ((1u64 << 30) / 50).to_string());
    }
}
