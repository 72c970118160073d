//! `wharf create configmap NAME` and `wharf create secret generic NAME`:
//! objects made from literals and files, as `kubectl create` makes them.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use wharf_api::{ConfigMap, ObjectMeta, Secret, check_config_key};

use super::ServerOption;
use super::objects::{Kind, ObjectName, ProjectOption};

/// Options of `wharf create`.
#[derive(Args)]
pub struct CreateArgs {
    #[command(subcommand)]
    what: CreateCommand,
}

#[derive(Subcommand)]
enum CreateCommand {
    /// A ConfigMap from literals and files.
    #[command(name = "configmap", visible_alias = "cm")]
    ConfigMap(DataArgs),
    /// A Secret (`generic`: from literals and files).
    Secret {
        #[command(subcommand)]
        kind: SecretKind,
    },
}

#[derive(Subcommand)]
enum SecretKind {
    /// An Opaque Secret (or of --type) from literals and files.
    Generic {
        #[command(flatten)]
        data: DataArgs,
        /// The Secret's type.
        #[arg(long = "type", default_value = wharf_api::SECRET_TYPE_OPAQUE)]
        secret_type: String,
    },
}

/// The name and the sources of the data.
#[derive(Args)]
struct DataArgs {
    #[command(flatten)]
    server: ServerOption,
    /// Name of the object.
    name: String,
    #[command(flatten)]
    project: ProjectOption,
    /// KEY=VALUE; repeatable.
    #[arg(long = "from-literal", value_name = "KEY=VALUE")]
    literals: Vec<String>,
    /// [KEY=]PATH: a file (its name is the key unless KEY is given), or a
    /// directory, whose regular files each become a key; repeatable.
    #[arg(long = "from-file", value_name = "[KEY=]PATH")]
    files: Vec<String>,
}

/// Creates the object; one that exists already is an error, as with
/// `kubectl create` (`apply` replaces).
pub async fn run(args: CreateArgs) -> Result<()> {
    let (kind, data, secret_type) = match args.what {
        CreateCommand::ConfigMap(data) => (Kind::ConfigMap, data, None),
        CreateCommand::Secret {
            kind: SecretKind::Generic { data, secret_type },
        } => (Kind::Secret, data, Some(secret_type)),
    };
    let entries = read_entries(&data.literals, &data.files)?;
    let mut client = data.server.client()?;
    let project = data.project.for_kind(kind, client.default_project())?;
    let metadata = ObjectMeta {
        name: data.name.clone(),
        project: Some(project.clone()),
        ..ObjectMeta::default()
    };
    let body = match secret_type {
        None => serde_json::to_value(config_map_of(metadata, entries)?)?,
        Some(secret_type) => {
            let mut secret = Secret {
                metadata,
                secret_type,
                data: entries,
                ..Secret::default()
            };
            secret.normalize();
            secret.validate()?;
            serde_json::to_value(secret)?
        }
    };
    client
        .post(&kind.collection_path(&project), &body)
        .await
        .with_context(|| {
            format!(
                "creating {} in project {project}",
                ObjectName(kind, &data.name)
            )
        })?;
    println!("{} created", ObjectName(kind, &data.name));
    Ok(())
}

/// A ConfigMap: UTF-8 values in `data`, others in `binaryData`, as kubectl
/// sorts them.
fn config_map_of(metadata: ObjectMeta, entries: BTreeMap<String, Vec<u8>>) -> Result<ConfigMap> {
    let mut config_map = ConfigMap {
        metadata,
        ..ConfigMap::default()
    };
    for (key, value) in entries {
        match String::from_utf8(value) {
            Ok(text) => {
                config_map.data.insert(key, text);
            }
            Err(bytes) => {
                config_map.binary_data.insert(key, bytes.into_bytes());
            }
        }
    }
    config_map.validate()?;
    Ok(config_map)
}

/// The keys and values of `--from-literal` and `--from-file`; a key given
/// twice is refused.
fn read_entries(literals: &[String], files: &[String]) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut entries = BTreeMap::new();
    let mut add = |key: String, value: Vec<u8>| -> Result<()> {
        check_config_key("key", &key)?;
        if entries.insert(key.clone(), value).is_some() {
            bail!("the key {key} is given twice");
        }
        Ok(())
    };
    for literal in literals {
        let Some((key, value)) = literal.split_once('=') else {
            bail!("--from-literal {literal:?}: use KEY=VALUE");
        };
        add(key.to_string(), value.as_bytes().to_vec())?;
    }
    for source in files {
        let (key, path) = match source.split_once('=') {
            Some((key, path)) => (Some(key.to_string()), Path::new(path)),
            None => (None, Path::new(source.as_str())),
        };
        if path.is_dir() {
            if key.is_some() {
                bail!("--from-file {source}: a directory takes no KEY=");
            }
            for (key, value) in directory_entries(path)? {
                add(key, value)?;
            }
            continue;
        }
        let key = match key {
            Some(key) => key,
            None => file_key(path)?,
        };
        let value = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        add(key, value)?;
    }
    Ok(entries)
}

/// The file name of `path`, as a key.
fn file_key(path: &Path) -> Result<String> {
    path.file_name()
        .and_then(|name| name.to_str())
        .map(str::to_string)
        .with_context(|| format!("{} has no file name to use as the key", path.display()))
}

/// Each regular file of `dir` whose name is a valid key, as kubectl takes
/// a directory (others are skipped).
fn directory_entries(dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut entries = Vec::new();
    let listing = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in listing {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        let path = entry.path();
        let Ok(key) = file_key(&path) else { continue };
        if !entry.file_type()?.is_file() || check_config_key("key", &key).is_err() {
            continue;
        }
        let value = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        entries.push((key, value));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_files_and_directories_become_keys() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.conf"), "a=1\n").unwrap();
        std::fs::write(dir.path().join("logo.bin"), [0u8, 255]).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let conf = dir.path().join("app.conf").display().to_string();
        let entries = read_entries(
            &["mode=prod".into(), "empty=".into()],
            &[format!("renamed={conf}")],
        )
        .unwrap();
        assert_eq!(entries["mode"], b"prod");
        assert_eq!(entries["empty"], b"");
        assert_eq!(entries["renamed"], b"a=1\n");
        let all = read_entries(&[], &[dir.path().display().to_string()]).unwrap();
        assert_eq!(all.keys().collect::<Vec<_>>(), ["app.conf", "logo.bin"]);
        let config_map = config_map_of(ObjectMeta::default(), all).unwrap_err();
        assert!(config_map.to_string().contains("metadata.name"));
        let twice = read_entries(&["app.conf=x".into()], &[conf]).unwrap_err();
        assert!(twice.to_string().contains("twice"), "{twice}");
        assert!(read_entries(&["novalue".into()], &[]).is_err());
        assert!(read_entries(&["a/b=1".into()], &[]).is_err());
    }

    #[test]
    fn binary_values_go_to_binary_data() {
        let meta = ObjectMeta {
            name: "c".into(),
            ..ObjectMeta::default()
        };
        let entries = BTreeMap::from([
            ("text".to_string(), b"hello".to_vec()),
            ("blob".to_string(), vec![0xff, 0xfe]),
        ]);
        let config_map = config_map_of(meta, entries).unwrap();
        assert_eq!(config_map.data["text"], "hello");
        assert_eq!(config_map.binary_data["blob"], [0xff, 0xfe]);
    }
}
