//! Amounts of cpu, memory and pod slots.

/// Amounts of the resources a node offers and a pod requests.
///
/// Arithmetic is checked or saturating: an overflow is never silent.
///
/// ```
/// use wharf_scheduler::Resources;
/// let node = Resources::new(4000, 8 << 30, 110);
/// let pod = Resources::new(500, 1 << 30, 1);
/// assert!(pod.fits_in(node));
/// assert_eq!(node.checked_sub(pod), Some(Resources::new(3500, 7 << 30, 109)));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Resources {
    /// CPU in thousandths of a core.
    pub cpu_millis: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// Pod slots.
    pub pods: u32,
}

impl Resources {
    /// Nothing at all.
    pub const ZERO: Resources = Resources::new(0, 0, 0);

    /// Resources with the given amounts.
    pub const fn new(cpu_millis: u64, memory_bytes: u64, pods: u32) -> Self {
        Resources {
            cpu_millis,
            memory_bytes,
            pods,
        }
    }

    /// The sum, or `None` if any component overflows.
    pub fn checked_add(self, other: Resources) -> Option<Resources> {
        Some(Resources {
            cpu_millis: self.cpu_millis.checked_add(other.cpu_millis)?,
            memory_bytes: self.memory_bytes.checked_add(other.memory_bytes)?,
            pods: self.pods.checked_add(other.pods)?,
        })
    }

    /// The difference, or `None` if any component would go below zero.
    pub fn checked_sub(self, other: Resources) -> Option<Resources> {
        Some(Resources {
            cpu_millis: self.cpu_millis.checked_sub(other.cpu_millis)?,
            memory_bytes: self.memory_bytes.checked_sub(other.memory_bytes)?,
            pods: self.pods.checked_sub(other.pods)?,
        })
    }

    /// The sum, each component clamped at its maximum.
    pub fn saturating_add(self, other: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_add(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
            pods: self.pods.saturating_add(other.pods),
        }
    }

    /// The difference, each component clamped at zero.
    pub fn saturating_sub(self, other: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_sub(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_sub(other.memory_bytes),
            pods: self.pods.saturating_sub(other.pods),
        }
    }

    /// Whether every component is at most the one in `available`.
    pub fn fits_in(self, available: Resources) -> bool {
        self.cpu_millis <= available.cpu_millis
            && self.memory_bytes <= available.memory_bytes
            && self.pods <= available.pods
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_arithmetic_reports_overflow_and_underflow() {
        let a = Resources::new(u64::MAX, 1, 1);
        assert_eq!(a.checked_add(Resources::new(1, 0, 0)), None);
        assert_eq!(
            Resources::new(1, 1, 0).checked_sub(Resources::new(0, 0, 1)),
            None
        );
        assert_eq!(
            Resources::new(1, 2, 3).checked_add(Resources::new(1, 1, 1)),
            Some(Resources::new(2, 3, 4))
        );
    }

    #[test]
    fn saturating_arithmetic_clamps() {
        let a = Resources::new(5, 5, 5);
        assert_eq!(
            a.saturating_sub(Resources::new(10, 1, 6)),
            Resources::new(0, 4, 0)
        );
        assert_eq!(
            Resources::new(u64::MAX, 0, u32::MAX).saturating_add(a),
            Resources::new(u64::MAX, 5, u32::MAX)
        );
    }

    #[test]
    fn fits_in_needs_every_component() {
        let node = Resources::new(1000, 1000, 2);
        assert!(Resources::new(1000, 1000, 2).fits_in(node));
        assert!(!Resources::new(1001, 0, 0).fits_in(node));
        assert!(!Resources::new(0, 1001, 0).fits_in(node));
        assert!(!Resources::new(0, 0, 3).fits_in(node));
    }
}
