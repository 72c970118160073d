//! The built dashboard, embedded at compile time (see `build.rs`).

/// One embedded file of `web/dist/`.
#[derive(Debug)]
pub struct Asset {
    /// Path under `web/dist/`, e.g. `assets/app-3F2A.js`.
    pub path: &'static str,
    /// The file as built.
    pub body: &'static [u8],
    /// The file gzipped (best compression), served to clients that accept it.
    pub gzip: &'static [u8],
}

/// Every file of the built dashboard.
pub static ASSETS: &[Asset] = include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// Path of the page that loads the app.
pub const INDEX: &str = "index.html";

/// The policy every dashboard response carries: this origin only, no inline
/// script or style, no framing, no plugins, forms post only here.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

impl Asset {
    /// The embedded file at `path` (relative to `web/dist/`).
    pub fn get(path: &str) -> Option<&'static Asset> {
        ASSETS.iter().find(|asset| asset.path == path)
    }

    /// The page that loads the app.
    pub fn index() -> &'static Asset {
        Asset::get(INDEX).expect("build.rs refuses a dist without index.html")
    }

    /// Its `Content-Type`, from the extension.
    pub fn content_type(&self) -> &'static str {
        match self.path.rsplit_once('.').map(|(_, ext)| ext) {
            Some("html") => "text/html; charset=utf-8",
            Some("js") => "text/javascript; charset=utf-8",
            Some("css") => "text/css; charset=utf-8",
            Some("svg") => "image/svg+xml",
            Some("png") => "image/png",
            Some("ico") => "image/x-icon",
            Some("json") => "application/json",
            Some("map") => "application/json",
            _ => "application/octet-stream",
        }
    }

    /// Whether its name carries a content hash (`assets/...`): such a file
    /// never changes under its name and may be cached for good.
    pub fn is_hashed(&self) -> bool {
        self.path.starts_with("assets/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the browser loads before the dashboard is usable: index.html
    /// and every asset it names.
    fn first_load() -> Vec<&'static Asset> {
        let index = Asset::index();
        let html = std::str::from_utf8(index.body).unwrap();
        let mut loaded = vec![index];
        for part in html.split('"').filter(|p| p.starts_with("/ui/assets/")) {
            let asset = Asset::get(part.trim_start_matches("/ui/"))
                .unwrap_or_else(|| panic!("index.html names {part}, which is not embedded"));
            loaded.push(asset);
        }
        loaded
    }

    #[test]
    fn first_load_is_under_500_kib_compressed() {
        let loaded = first_load();
        assert!(
            loaded.iter().any(|a| a.path.ends_with(".js")),
            "index.html loads the app script"
        );
        assert!(
            loaded.iter().any(|a| a.path.ends_with(".css")),
            "index.html loads the styles"
        );
        let compressed: usize = loaded.iter().map(|a| a.gzip.len()).sum();
        assert!(
            compressed < 500 * 1024,
            "first load is {compressed} bytes compressed"
        );
    }

    /// The XML namespace of SVG elements (`createElementNS`).
    const SVG_NAMESPACE: &str = "http://www.w3.org/2000/svg";

    #[test]
    fn no_asset_references_another_origin() {
        for asset in ASSETS {
            // The SVG namespace is a name the charts create elements in,
            // never fetched; it is the one URL the app may spell out.
            let text = String::from_utf8_lossy(asset.body).replace(SVG_NAMESPACE, "");
            for needle in [
                "http://",
                "https://",
                "//fonts.",
                "url(//",
                "src=\"//",
                "href=\"//",
            ] {
                assert!(
                    !text.contains(needle),
                    "{} mentions {needle}: the dashboard loads nothing from another origin",
                    asset.path
                );
            }
        }
    }

    #[test]
    fn gzip_copies_decompress_to_the_files() {
        use std::io::Read;
        for asset in ASSETS {
            let mut plain = Vec::new();
            flate2::read::GzDecoder::new(asset.gzip)
                .read_to_end(&mut plain)
                .unwrap_or_else(|e| panic!("{} gzip: {e}", asset.path));
            assert!(
                plain == asset.body,
                "{} gzip differs from the file",
                asset.path
            );
        }
    }

    #[test]
    fn hashed_assets_and_content_types() {
        let index = Asset::index();
        assert!(!index.is_hashed());
        assert_eq!(index.content_type(), "text/html; charset=utf-8");
        for asset in ASSETS.iter().filter(|a| a.path != INDEX) {
            assert!(asset.is_hashed(), "{} sits under assets/", asset.path);
            assert_ne!(
                asset.content_type(),
                "application/octet-stream",
                "{}",
                asset.path
            );
        }
    }
}
