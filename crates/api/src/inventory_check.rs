//! Validation of the inventory kinds ([`Cluster`], [`Pool`],
//! [`MachineClass`]): the shape of one object. That a pool's cluster and
//! classes exist is the control plane's to check, against the store.

use std::collections::BTreeSet;

use crate::inventory::{
    Cluster, InitProfile, LABEL_CLUSTER, LABEL_TIER, MachineClass, MachineClassSpec, Pool,
    QuantityRange,
};
use crate::meta::{check_label, check_labels, check_name};
use crate::node::{LABEL_CLUSTER_KIND, LABEL_IDC, LABEL_MACHINE_CLASS, LABEL_POOL};
use crate::{ObjectError, parse_cpu_millis, parse_memory_bytes};

/// The node labels the inventory sets when a node joins a pool; a pool's
/// own labels may not set them, or a pool could claim another's nodes.
pub const INVENTORY_NODE_LABELS: [&str; 6] = [
    LABEL_POOL,
    LABEL_CLUSTER,
    LABEL_CLUSTER_KIND,
    LABEL_IDC,
    LABEL_MACHINE_CLASS,
    LABEL_TIER,
];

/// The annotation an agent started with `--pool` puts on its node: the
/// registration then asks to join that pool, which must exist. A bare
/// `wharf.io/pool` label joins only a pool that exists; naming one that
/// does not is a plain label, as before the inventory.
pub const ANNOTATION_JOIN_POOL: &str = "wharf.io/join-pool";

/// Refuses a price that is negative, NaN or infinite: cost reports sum
/// them, and one such price would poison every total.
pub fn check_price(field: &str, price: f64) -> Result<(), ObjectError> {
    if price.is_finite() && price >= 0.0 {
        Ok(())
    } else {
        Err(ObjectError::invalid(
            field,
            format!("price {price} is not a finite amount of at least 0"),
        ))
    }
}

impl Cluster {
    /// Checks the name, IDC (a label value on nodes), provider and price.
    pub fn validate(&self) -> Result<(), ObjectError> {
        check_name("metadata.name", &self.metadata.name)?;
        if let Some(idc) = &self.spec.idc {
            check_label("spec.idc", LABEL_IDC, idc)?;
        }
        if let Some(provider) = &self.spec.provider {
            check_name("spec.provider.driver", &provider.driver)?;
            if let Some(secret) = &provider.credentials_secret {
                check_name("spec.provider.credentialsSecret", secret)?;
            }
            for (index, machine) in provider.machines.iter().enumerate() {
                if machine.is_empty() || machine.chars().any(|c| c.is_whitespace()) {
                    return Err(ObjectError::invalid(
                        format!("spec.provider.machines[{index}]"),
                        format!("{machine:?} is not a machine address"),
                    ));
                }
            }
        }
        if let Some(price) = self.spec.price_per_hour {
            check_price("spec.pricePerHour", price)?;
        }
        Ok(())
    }
}

impl Pool {
    /// Checks the pool's own fields: names, labels and taints (label
    /// rules; the inventory's own `wharf.io/` node labels refused), the
    /// init profile, the price and the autoscaling bounds.
    pub fn validate(&self) -> Result<(), ObjectError> {
        let spec = &self.spec;
        check_name("metadata.name", &self.metadata.name)?;
        check_name("spec.cluster", &spec.cluster)?;
        check_labels("spec.labels", &spec.labels)?;
        if let Some(key) = spec
            .labels
            .keys()
            .find(|k| INVENTORY_NODE_LABELS.contains(&k.as_str()))
        {
            return Err(ObjectError::invalid(
                "spec.labels",
                format!("{key} is set by the inventory when a node joins, not by a pool"),
            ));
        }
        for (index, taint) in spec.taints.iter().enumerate() {
            check_label(&format!("spec.taints[{index}]"), &taint.key, &taint.value)?;
        }
        let mut seen = BTreeSet::new();
        for (index, class) in spec.machine_classes.iter().enumerate() {
            let field = format!("spec.machineClasses[{index}]");
            check_name(&field, class)?;
            if !seen.insert(class) {
                return Err(ObjectError::invalid(
                    field,
                    format!("{class} is listed twice"),
                ));
            }
        }
        if let Some(init) = &spec.init {
            init.validate("spec.init")?;
        }
        if let Some(price) = spec.price_per_hour {
            check_price("spec.pricePerHour", price)?;
        }
        if let Some(autoscale) = &spec.autoscale {
            check_name("spec.autoscale.machineClass", &autoscale.machine_class)?;
            if autoscale.min > autoscale.max {
                return Err(ObjectError::invalid(
                    "spec.autoscale",
                    format!("min {} is more than max {}", autoscale.min, autoscale.max),
                ));
            }
        }
        Ok(())
    }

    /// The machine classes the pool names (its allowed ones and its
    /// autoscaling class), each once: all must exist.
    pub fn named_classes(&self) -> BTreeSet<&str> {
        let autoscaled = self.spec.autoscale.iter().map(|a| a.machine_class.as_str());
        self.spec
            .machine_classes
            .iter()
            .map(String::as_str)
            .chain(autoscaled)
            .collect()
    }
}

impl MachineClass {
    /// Checks the name, the ranges (quantities, min <= max) and the price.
    pub fn validate(&self) -> Result<(), ObjectError> {
        check_name("metadata.name", &self.metadata.name)?;
        self.spec.cpu_millis()?;
        self.spec.memory_bytes()?;
        check_price("spec.pricePerHour", self.spec.price_per_hour)
    }
}

/// Inclusive bounds, `None` for an open end.
pub type Bounds = (Option<u64>, Option<u64>);

impl MachineClassSpec {
    /// The CPU range in millicores.
    pub fn cpu_millis(&self) -> Result<Bounds, ObjectError> {
        bounds(self.cpu.as_ref(), "spec.cpu", parse_cpu_millis)
    }

    /// The memory range in bytes.
    pub fn memory_bytes(&self) -> Result<Bounds, ObjectError> {
        bounds(self.memory.as_ref(), "spec.memory", parse_memory_bytes)
    }

    /// Whether a machine of this capacity is of the class: within both
    /// ranges. A class with neither range matches only by name.
    pub fn contains(&self, cpu_millis: u64, memory_bytes: u64) -> bool {
        if self.cpu.is_none() && self.memory.is_none() {
            return false;
        }
        let within = |bounds: Result<Bounds, ObjectError>, value: u64| match bounds {
            Ok((min, max)) => min.is_none_or(|m| value >= m) && max.is_none_or(|m| value <= m),
            Err(_) => false,
        };
        within(self.cpu_millis(), cpu_millis) && within(self.memory_bytes(), memory_bytes)
    }
}

fn bounds(
    range: Option<&QuantityRange>,
    field: &str,
    parse: fn(&str, &str) -> Result<u64, ObjectError>,
) -> Result<Bounds, ObjectError> {
    let Some(range) = range else {
        return Ok((None, None));
    };
    let end = |text: &Option<String>, name: &str| {
        text.as_deref()
            .map(|t| parse(&format!("{field}.{name}"), t))
            .transpose()
    };
    let (min, max) = (end(&range.min, "min")?, end(&range.max, "max")?);
    if let (Some(low), Some(high)) = (min, max)
        && low > high
    {
        return Err(ObjectError::invalid(
            field,
            format!(
                "min {} is more than max {}",
                range.min.as_deref().unwrap_or_default(),
                range.max.as_deref().unwrap_or_default()
            ),
        ));
    }
    Ok((min, max))
}

impl InitProfile {
    /// Checks what the profile would run as root: package and module
    /// names (no options, no paths), sysctl names, plain absolute file
    /// paths with octal modes.
    pub fn validate(&self, field: &str) -> Result<(), ObjectError> {
        for (index, package) in self.packages.iter().enumerate() {
            if !is_package_name(package) {
                return Err(ObjectError::invalid(
                    format!("{field}.packages[{index}]"),
                    format!("{package:?} is not a Debian package name"),
                ));
            }
        }
        for (index, module) in self.kernel_modules.iter().enumerate() {
            if !is_module_name(module) {
                return Err(ObjectError::invalid(
                    format!("{field}.kernelModules[{index}]"),
                    format!("{module:?} is not a kernel module name"),
                ));
            }
        }
        for (name, value) in &self.sysctls {
            if !is_sysctl_name(name) {
                return Err(ObjectError::invalid(
                    format!("{field}.sysctls"),
                    format!("{name:?} is not a sysctl name: use a-z, 0-9, '_' and '.'"),
                ));
            }
            if value.contains(['\n', '\0']) {
                return Err(ObjectError::invalid(
                    format!("{field}.sysctls.{name}"),
                    "a sysctl value is one line",
                ));
            }
        }
        let mut paths = BTreeSet::new();
        for (index, file) in self.files.iter().enumerate() {
            let at = format!("{field}.files[{index}]");
            if !is_plain_absolute_path(&file.path) {
                return Err(ObjectError::invalid(
                    format!("{at}.path"),
                    format!("{:?} is not an absolute path without '..'", file.path),
                ));
            }
            if !paths.insert(file.path.as_str()) {
                return Err(ObjectError::invalid(
                    format!("{at}.path"),
                    format!("{} is written twice", file.path),
                ));
            }
            if let Some(mode) = &file.mode
                && !is_octal_mode(mode)
            {
                return Err(ObjectError::invalid(
                    format!("{at}.mode"),
                    format!("{mode:?} is not an octal mode such as \"0644\""),
                ));
            }
        }
        Ok(())
    }
}

/// Debian policy: lowercase letters, digits, `+`, `-`, `.`; at least two
/// characters, starting with a letter or digit.
fn is_package_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    bytes.len() >= 2
        && bytes.len() <= 128
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
}

fn is_module_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn is_sysctl_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && name.split('.').all(|part| !part.is_empty())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
}

fn is_plain_absolute_path(path: &str) -> bool {
    path.len() > 1
        && path.len() <= 4096
        && path.starts_with('/')
        && !path.contains('\0')
        && path
            .split('/')
            .skip(1)
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

/// `644`, `0644` or `1777`: three or four octal digits.
fn is_octal_mode(mode: &str) -> bool {
    (3..=4).contains(&mode.len()) && mode.bytes().all(|b| (b'0'..=b'7').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{Taint, TaintEffect};
    use crate::{InitFile, PoolAutoscale};

    fn class(cpu: (&str, &str), price: f64) -> MachineClass {
        let end = |t: &str| (!t.is_empty()).then(|| t.to_string());
        let mut class: MachineClass = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "std-32c32g"},
            "spec": {"cpu": {"min": end(cpu.0), "max": end(cpu.1)}, "memory": {"min": "16Gi"},
                     "pricePerHour": 0.0}
        }))
        .unwrap();
        // Set here: JSON has no NaN or infinity to read one from.
        class.spec.price_per_hour = price;
        class
    }

    fn pool() -> Pool {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "core"},
            "spec": {"cluster": "bj", "labels": {"team": "web"}, "machineClasses": ["std-32c32g"]}
        }))
        .unwrap()
    }

    fn message(result: Result<(), ObjectError>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn a_class_has_ordered_parsable_ranges_and_a_real_price() {
        assert_eq!(class(("16", "32"), 0.4).validate(), Ok(()));
        assert!(
            message(class(("32", "16"), 0.4).validate()).contains("min 32 is more than max 16")
        );
        assert!(message(class(("lots", ""), 0.4).validate()).contains("spec.cpu.min"));
        for price in [-0.01, f64::NAN, f64::INFINITY] {
            assert!(message(class(("", ""), price).validate()).contains("spec.pricePerHour"));
        }
        let mut bad_memory = class(("1", "2"), 1.0);
        bad_memory.spec.memory = Some(QuantityRange {
            min: Some("16GB".into()),
            max: None,
        });
        assert!(message(bad_memory.validate()).contains("spec.memory.min"));
    }

    #[test]
    fn a_class_contains_machines_within_both_ranges() {
        let class = class(("16", "32"), 0.4).spec;
        assert!(class.contains(32_000, 32 << 30));
        assert!(!class.contains(12_000, 32 << 30));
        assert!(!class.contains(32_000, 8 << 30));
        assert!(!MachineClassSpec::default().contains(1, 1));
    }

    #[test]
    fn a_pool_checks_its_labels_taints_classes_price_and_bounds() {
        assert_eq!(pool().validate(), Ok(()));
        let mut p = pool();
        p.spec.labels.insert("bad key!".into(), "x".into());
        assert!(message(p.validate()).contains("invalid label key"));
        let mut p = pool();
        p.spec.labels.insert(LABEL_POOL.into(), "other".into());
        assert!(message(p.validate()).contains("set by the inventory"));
        let mut p = pool();
        p.spec.taints.push(Taint {
            key: "dedicated".into(),
            value: "not ok!".into(),
            effect: TaintEffect::NoSchedule,
            time_added: None,
        });
        assert!(message(p.validate()).contains("spec.taints[0]"));
        let mut p = pool();
        p.spec.machine_classes.push("std-32c32g".into());
        assert!(message(p.validate()).contains("listed twice"));
        let mut p = pool();
        p.spec.price_per_hour = Some(-1.0);
        assert!(message(p.validate()).contains("spec.pricePerHour"));
        let mut p = pool();
        p.spec.cluster = "Not A Name".into();
        assert!(message(p.validate()).contains("spec.cluster"));
        let mut p = pool();
        p.spec.autoscale = Some(PoolAutoscale {
            min: 3,
            max: 1,
            machine_class: "std-32c32g".into(),
            scale_down_delay_seconds: None,
        });
        assert!(message(p.validate()).contains("min 3 is more than max 1"));
    }

    #[test]
    fn an_init_profile_runs_nothing_it_cannot_name() {
        let check = |profile: InitProfile| profile.validate("spec.init");
        let good = InitProfile {
            packages: vec!["iproute2".into(), "libc6-dev".into(), "g++".into()],
            kernel_modules: vec!["br_netfilter".into(), "overlay".into()],
            sysctls: [("net.ipv4.ip_forward".to_string(), "1".to_string())].into(),
            files: vec![InitFile {
                path: "/etc/wharf/motd".into(),
                content: "hi\n".into(),
                mode: Some("0644".into()),
            }],
            script: Some("true".into()),
        };
        assert_eq!(check(good.clone()), Ok(()));
        let file = |path: &str, mode: Option<&str>| InitProfile {
            files: vec![InitFile {
                path: path.into(),
                content: String::new(),
                mode: mode.map(str::to_string),
            }],
            ..InitProfile::default()
        };
        for path in ["etc/motd", "/etc/../root/x", "/", "/etc//x", "/etc/./x"] {
            assert!(
                message(check(file(path, None))).contains("absolute path"),
                "{path}"
            );
        }
        for mode in ["644x", "0888", "7", "00644"] {
            assert!(
                message(check(file("/etc/x", Some(mode)))).contains("octal"),
                "{mode}"
            );
        }
        let sysctl = |name: &str| InitProfile {
            sysctls: [(name.to_string(), "1".to_string())].into(),
            ..InitProfile::default()
        };
        for name in ["net/ipv4/ip_forward", "Net.IPv4", "net..x", "x y"] {
            assert!(
                message(check(sysctl(name))).contains("not a sysctl name"),
                "{name}"
            );
        }
        for package in ["-oDpkg::x", "../x", "Foo", "a b"] {
            let profile = InitProfile {
                packages: vec![package.into()],
                ..InitProfile::default()
            };
            assert!(message(check(profile)).contains("packages[0]"), "{package}");
        }
        for module in ["", "-r", "a/b"] {
            let profile = InitProfile {
                kernel_modules: vec![module.into()],
                ..InitProfile::default()
            };
            assert!(
                message(check(profile)).contains("kernelModules[0]"),
                "{module}"
            );
        }
    }

    #[test]
    fn a_cluster_checks_its_idc_and_price() {
        let mut cluster = Cluster::default();
        cluster.metadata.name = "bj-physical".into();
        cluster.spec.idc = Some("bj-1".into());
        assert_eq!(cluster.validate(), Ok(()));
        cluster.spec.idc = Some("bj 1".into());
        assert!(message(cluster.validate()).contains("spec.idc"));
        cluster.spec.idc = None;
        cluster.spec.price_per_hour = Some(f64::NEG_INFINITY);
        assert!(message(cluster.validate()).contains("spec.pricePerHour"));
    }
}
