//! What an end-to-end test needs from the machine: `wharf_testkit::prereq`.

pub use wharf_testkit::prereq::{find_executable, require, require_root, require_tool};
