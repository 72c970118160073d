//! Taints on nodes and the tolerations pods carry, with Kubernetes matching
//! semantics.

use std::fmt;

/// What a taint does to pods that do not tolerate it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TaintEffect {
    /// Pods that do not tolerate the taint are never placed on the node.
    NoSchedule,
    /// Pods that do not tolerate the taint avoid the node when they can.
    PreferNoSchedule,
    /// Like `NoSchedule`; the node agent also evicts running pods that do
    /// not tolerate it. For placement the two are the same.
    NoExecute,
}

impl TaintEffect {
    /// Whether an untolerated taint with this effect rules a node out.
    pub fn blocks_scheduling(self) -> bool {
        matches!(self, TaintEffect::NoSchedule | TaintEffect::NoExecute)
    }
}

impl fmt::Display for TaintEffect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TaintEffect::NoSchedule => "NoSchedule",
            TaintEffect::PreferNoSchedule => "PreferNoSchedule",
            TaintEffect::NoExecute => "NoExecute",
        })
    }
}

/// A mark on a node that repels pods which do not tolerate it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Taint {
    /// Taint key, e.g. `dedicated`.
    pub key: String,
    /// Taint value; may be empty.
    pub value: String,
    /// What the taint does to pods that do not tolerate it.
    pub effect: TaintEffect,
}

impl Taint {
    /// A taint with the given key, value and effect.
    pub fn new(key: impl Into<String>, value: impl Into<String>, effect: TaintEffect) -> Self {
        Taint {
            key: key.into(),
            value: value.into(),
            effect,
        }
    }
}

/// How a toleration compares its value with a taint's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TolerationOperator {
    /// The taint's value must equal the toleration's (the Kubernetes default).
    #[default]
    Equal,
    /// Any value matches.
    Exists,
}

/// A pod's permission to land on nodes carrying matching taints.
///
/// Matching follows Kubernetes: an empty or missing key matches every key
/// (with `Exists` that tolerates every taint); a missing effect matches every
/// effect; `Equal` compares values, `Exists` ignores them.
///
/// ```
/// use wharf_scheduler::{Taint, TaintEffect, Toleration};
/// let gpu = Taint::new("dedicated", "gpu", TaintEffect::NoSchedule);
/// assert!(Toleration::equal("dedicated", "gpu").tolerates(&gpu));
/// assert!(!Toleration::equal("dedicated", "db").tolerates(&gpu));
/// assert!(Toleration::exists("dedicated").tolerates(&gpu));
/// assert!(Toleration::everything().tolerates(&gpu));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Toleration {
    /// Taint key to match; `None` or empty matches every key.
    pub key: Option<String>,
    /// How values are compared.
    pub operator: TolerationOperator,
    /// Value compared by `Equal`; ignored by `Exists`.
    pub value: String,
    /// Effect to match; `None` matches every effect.
    pub effect: Option<TaintEffect>,
}

impl Toleration {
    /// Tolerates taints with this key and value, whatever their effect.
    pub fn equal(key: impl Into<String>, value: impl Into<String>) -> Self {
        Toleration {
            key: Some(key.into()),
            operator: TolerationOperator::Equal,
            value: value.into(),
            effect: None,
        }
    }

    /// Tolerates taints with this key, whatever their value and effect.
    pub fn exists(key: impl Into<String>) -> Self {
        Toleration {
            key: Some(key.into()),
            operator: TolerationOperator::Exists,
            value: String::new(),
            effect: None,
        }
    }

    /// Tolerates every taint (empty key with `Exists`).
    pub fn everything() -> Self {
        Toleration {
            key: None,
            operator: TolerationOperator::Exists,
            value: String::new(),
            effect: None,
        }
    }

    /// The same toleration restricted to one effect.
    pub fn with_effect(mut self, effect: TaintEffect) -> Self {
        self.effect = Some(effect);
        self
    }

    /// Whether this toleration matches `taint`.
    pub fn tolerates(&self, taint: &Taint) -> bool {
        if self.effect.is_some_and(|effect| effect != taint.effect) {
            return false;
        }
        if let Some(key) = self.key.as_deref().filter(|key| !key.is_empty())
            && key != taint.key
        {
            return false;
        }
        match self.operator {
            TolerationOperator::Exists => true,
            TolerationOperator::Equal => self.value == taint.value,
        }
    }
}

/// Whether any of `tolerations` matches `taint`.
pub fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations
        .iter()
        .any(|toleration| toleration.tolerates(taint))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str, value: &str, effect: TaintEffect) -> Taint {
        Taint::new(key, value, effect)
    }

    #[test]
    fn equal_needs_same_key_and_value() {
        let t = taint("k", "v", TaintEffect::NoSchedule);
        assert!(Toleration::equal("k", "v").tolerates(&t));
        assert!(!Toleration::equal("k", "w").tolerates(&t));
        assert!(!Toleration::equal("other", "v").tolerates(&t));
    }

    #[test]
    fn equal_with_empty_value_matches_empty_taint_value_only() {
        assert!(Toleration::equal("k", "").tolerates(&taint("k", "", TaintEffect::NoSchedule)));
        assert!(!Toleration::equal("k", "").tolerates(&taint("k", "v", TaintEffect::NoSchedule)));
    }

    #[test]
    fn exists_ignores_value() {
        let t = taint("k", "anything", TaintEffect::NoExecute);
        assert!(Toleration::exists("k").tolerates(&t));
        assert!(!Toleration::exists("j").tolerates(&t));
    }

    #[test]
    fn empty_key_with_exists_tolerates_everything() {
        let everything = Toleration::everything();
        for effect in [
            TaintEffect::NoSchedule,
            TaintEffect::PreferNoSchedule,
            TaintEffect::NoExecute,
        ] {
            assert!(everything.tolerates(&taint("a", "b", effect)));
        }
        let empty_key = Toleration {
            key: Some(String::new()),
            operator: TolerationOperator::Exists,
            ..Toleration::default()
        };
        assert!(empty_key.tolerates(&taint("x", "y", TaintEffect::NoSchedule)));
    }

    #[test]
    fn empty_key_with_equal_matches_any_key_with_that_value() {
        let toleration = Toleration {
            key: None,
            operator: TolerationOperator::Equal,
            value: "v".into(),
            effect: None,
        };
        assert!(toleration.tolerates(&taint("a", "v", TaintEffect::NoSchedule)));
        assert!(!toleration.tolerates(&taint("a", "w", TaintEffect::NoSchedule)));
    }

    #[test]
    fn effect_restricts_matching() {
        let t = taint("k", "v", TaintEffect::NoExecute);
        assert!(
            Toleration::exists("k")
                .with_effect(TaintEffect::NoExecute)
                .tolerates(&t)
        );
        assert!(
            !Toleration::exists("k")
                .with_effect(TaintEffect::NoSchedule)
                .tolerates(&t)
        );
        assert!(
            !Toleration::everything()
                .with_effect(TaintEffect::PreferNoSchedule)
                .tolerates(&t)
        );
    }

    #[test]
    fn only_no_schedule_and_no_execute_block() {
        assert!(TaintEffect::NoSchedule.blocks_scheduling());
        assert!(TaintEffect::NoExecute.blocks_scheduling());
        assert!(!TaintEffect::PreferNoSchedule.blocks_scheduling());
    }

    #[test]
    fn tolerated_checks_any() {
        let t = taint("k", "v", TaintEffect::NoSchedule);
        assert!(!tolerated(&[], &t));
        assert!(tolerated(
            &[Toleration::exists("x"), Toleration::exists("k")],
            &t
        ));
    }
}
