//! Embeds `web/dist/` (the built dashboard, committed so that building Wharf
//! needs no node): writes a table of its files with their content types and a
//! gzipped copy of each, for `src/assets.rs` to include.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("manifest dir"));
    let dist = root.join("web/dist");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("out dir"));
    println!("cargo:rerun-if-changed={}", dist.display());

    let mut files = Vec::new();
    collect(&dist, &mut files);
    files.sort();
    assert!(
        files.iter().any(|f| f.ends_with("index.html")),
        "{} has no index.html: run scripts/build-dashboard",
        dist.display()
    );

    let mut table = String::from("&[\n");
    for (index, file) in files.iter().enumerate() {
        println!("cargo:rerun-if-changed={}", file.display());
        let relative = file.strip_prefix(&dist).expect("under dist");
        let path = relative.to_str().expect("asset names are UTF-8");
        let body = std::fs::read(file).expect("reading an asset");
        let gzip_path = out.join(format!("asset-{index}.gz"));
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(&body).expect("gzip in memory");
        std::fs::write(&gzip_path, encoder.finish().expect("gzip in memory"))
            .expect("writing a gzipped asset");
        writeln!(
            table,
            "    Asset {{ path: {path:?}, body: include_bytes!({file:?}), gzip: include_bytes!({gzip:?}) }},",
            file = file.display().to_string(),
            gzip = gzip_path.display().to_string(),
        )
        .expect("writing to a string");
    }
    table.push(']');
    std::fs::write(out.join("assets.rs"), table).expect("writing the asset table");
}

/// Every file under `dir`, recursively.
fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}; run scripts/build-dashboard", dir.display()));
    for entry in entries {
        let path = entry.expect("reading web/dist").path();
        if path.is_dir() {
            collect(&path, files);
        } else {
            files.push(path);
        }
    }
}
