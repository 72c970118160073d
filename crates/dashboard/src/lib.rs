//! The Wharf web dashboard: a small TypeScript app (sources in `web/`,
//! built into `web/dist/` by `scripts/build-dashboard`) embedded in the
//! binary and served at `/` and `/ui/...`.
//!
//! The app is just another client of `/api/v1/`: it logs in for a session
//! cookie and calls the API with it, so the API's authorization applies
//! unchanged. Nothing here reads state or checks access; nothing in the app
//! refers to another origin (the CSP forbids it too).
//!
//! ```
//! let app: axum::Router = wharf_dashboard::router();
//! # let _ = app;
//! ```

mod assets;
mod serve;

pub use assets::{ASSETS, Asset, CONTENT_SECURITY_POLICY, INDEX};
pub use serve::router;
