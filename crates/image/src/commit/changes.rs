//! `docker commit --change`: the Dockerfile instructions that edit an
//! image's config, parsed and applied in order to the config JSON.
//!
//! The rules, as Docker's builder applies them:
//! - `CMD` and `ENTRYPOINT` take a JSON array (exec form) or anything else
//!   (shell form, run as `["/bin/sh", "-c", text]`); text that starts with
//!   `[` but is no JSON array of strings is shell form too.
//! - `ENTRYPOINT` resets `Cmd` to null unless a `CMD` came earlier in the
//!   same changes; `CMD` alone changes nothing else.
//! - `ENV k=v ...` (several pairs, values quoted as in a shell) or the
//!   legacy `ENV k value with spaces`; a variable already set is replaced
//!   in place, a new one appended.
//! - `LABEL k=v ...` merges into `Labels`; `EXPOSE 80 53/udp 8000-8002`
//!   adds to `ExposedPorts` (protocol `tcp` by default); `WORKDIR` relative
//!   to the current working directory resolves against it; `USER` sets
//!   `User`.
//! - Anything else (`RUN`, `COPY`, `ONBUILD`, `VOLUME`, ...) is refused.
//!
//! Unlike Docker, `$VARIABLE` references are kept as written, not expanded.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use serde_json::{Map, Value};

use crate::ImageError;

/// The instructions a commit accepts.
const ALLOWED: &str = "CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, WORKDIR";

/// One config change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigChange {
    /// `CMD`: the new `Cmd`.
    Cmd(Vec<String>),
    /// `ENTRYPOINT`: the new `Entrypoint`.
    Entrypoint(Vec<String>),
    /// `ENV`: variables to set, in order.
    Env(Vec<(String, String)>),
    /// `WORKDIR`: absolute, or relative to the working directory so far.
    WorkingDir(String),
    /// `EXPOSE`: `ExposedPorts` keys such as `80/tcp`.
    Expose(Vec<String>),
    /// `LABEL`: labels to set, in order.
    Label(Vec<(String, String)>),
    /// `USER`: `user[:group]`.
    User(String),
}

/// The `--change` instructions of a commit, in the order given.
///
/// ```
/// use wharf_image::{ConfigChange, ConfigChanges};
/// let changes = ConfigChanges::parse(&["ENV MODE=prod".to_string(), "EXPOSE 80".to_string()]).unwrap();
/// assert_eq!(changes.changes[1], ConfigChange::Expose(vec!["80/tcp".to_string()]));
/// assert!(ConfigChanges::parse(&["RUN rm -rf /".to_string()]).is_err());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigChanges {
    /// The changes, applied in this order.
    pub changes: Vec<ConfigChange>,
}

impl ConfigChanges {
    /// Parses each instruction; the first bad one is the error, naming it.
    pub fn parse(lines: &[String]) -> Result<ConfigChanges, ImageError> {
        let changes = lines
            .iter()
            .map(|line| {
                parse_one(line).map_err(|reason| ImageError::InvalidChange {
                    change: line.clone(),
                    reason,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(ConfigChanges { changes })
    }

    /// Applies the changes to an image config's `config` object (created
    /// if missing). Fields the changes do not name are kept as they are.
    pub(crate) fn apply(&self, config: &mut Map<String, Value>) {
        let mut cmd_set = false;
        for change in &self.changes {
            match change {
                ConfigChange::Cmd(cmd) => {
                    config.insert("Cmd".into(), strings(cmd));
                    cmd_set = true;
                }
                ConfigChange::Entrypoint(entrypoint) => {
                    config.insert("Entrypoint".into(), strings(entrypoint));
                    if !cmd_set {
                        config.insert("Cmd".into(), Value::Null);
                    }
                }
                ConfigChange::Env(vars) => set_env(config, vars),
                ConfigChange::WorkingDir(dir) => {
                    let current = config
                        .get("WorkingDir")
                        .and_then(Value::as_str)
                        .filter(|s| !s.is_empty())
                        .unwrap_or("/");
                    let dir = resolve_dir(current, dir);
                    config.insert("WorkingDir".into(), Value::String(dir));
                }
                ConfigChange::Expose(ports) => {
                    let exposed = object_field(config, "ExposedPorts");
                    for port in ports {
                        exposed.insert(port.clone(), Value::Object(Map::new()));
                    }
                }
                ConfigChange::Label(labels) => {
                    let map = object_field(config, "Labels");
                    for (key, value) in labels {
                        map.insert(key.clone(), Value::String(value.clone()));
                    }
                }
                ConfigChange::User(user) => {
                    config.insert("User".into(), Value::String(user.clone()));
                }
            }
        }
    }
}

fn strings(items: &[String]) -> Value {
    Value::Array(items.iter().cloned().map(Value::String).collect())
}

/// `config[key]` as an object, replacing a null or anything else.
fn object_field<'a>(config: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let slot = config
        .entry(key.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    slot.as_object_mut().expect("made an object above")
}

fn set_env(config: &mut Map<String, Value>, vars: &[(String, String)]) {
    let slot = config
        .entry("Env".to_string())
        .or_insert_with(|| Value::Array(Vec::new()));
    if !slot.is_array() {
        *slot = Value::Array(Vec::new());
    }
    let env = slot.as_array_mut().expect("made an array above");
    for (name, value) in vars {
        let entry = Value::String(format!("{name}={value}"));
        let prefix = format!("{name}=");
        match env.iter_mut().find(|e| {
            e.as_str()
                .is_some_and(|s| s.starts_with(&prefix) || s == name)
        }) {
            Some(existing) => *existing = entry,
            None => env.push(entry),
        }
    }
}

/// `dir` against the working directory so far, lexically cleaned.
fn resolve_dir(current: &str, dir: &str) -> String {
    let joined = Path::new(current).join(dir);
    let mut clean = PathBuf::from("/");
    for component in joined.components() {
        match component {
            Component::Normal(name) => clean.push(name),
            Component::ParentDir => {
                clean.pop();
            }
            _ => {}
        }
    }
    clean.to_string_lossy().into_owned()
}

fn parse_one(line: &str) -> Result<ConfigChange, String> {
    if line.contains('\n') || line.contains('\r') {
        return Err("give one instruction per change (it contains a line break)".into());
    }
    let line = line.trim();
    let (instruction, args) = match line.split_once(char::is_whitespace) {
        Some((instruction, args)) => (instruction, args.trim()),
        None => (line, ""),
    };
    if instruction.is_empty() {
        return Err(format!("empty change; allowed instructions: {ALLOWED}"));
    }
    let upper = instruction.to_ascii_uppercase();
    let needs_args = |what: &str| {
        if args.is_empty() {
            Err(format!("{upper} needs {what}"))
        } else {
            Ok(())
        }
    };
    match upper.as_str() {
        "CMD" => {
            needs_args("a command")?;
            Ok(ConfigChange::Cmd(command(args)))
        }
        "ENTRYPOINT" => {
            needs_args("a command")?;
            Ok(ConfigChange::Entrypoint(command(args)))
        }
        "ENV" => {
            needs_args("NAME=value")?;
            let vars = name_values(args, "ENV")?;
            if let Some((name, _)) = vars.iter().find(|(n, _)| n.contains('=')) {
                return Err(format!("invalid variable name {name:?}"));
            }
            Ok(ConfigChange::Env(vars))
        }
        "LABEL" => {
            needs_args("key=value")?;
            Ok(ConfigChange::Label(name_values(args, "LABEL")?))
        }
        "WORKDIR" => {
            needs_args("a directory")?;
            let words = lex(args, true)?;
            match words.as_slice() {
                [dir] => Ok(ConfigChange::WorkingDir(dir.clone())),
                _ => Err("WORKDIR takes one directory".into()),
            }
        }
        "USER" => {
            needs_args("a user")?;
            let words = lex(args, true)?;
            match words.as_slice() {
                [user] if !user.is_empty() => Ok(ConfigChange::User(user.clone())),
                _ => Err("USER takes one user[:group]".into()),
            }
        }
        "EXPOSE" => {
            needs_args("a port")?;
            let mut ports = BTreeSet::new();
            for word in lex(args, true)? {
                ports.extend(exposed_ports(&word)?);
            }
            Ok(ConfigChange::Expose(ports.into_iter().collect()))
        }
        _ => Err(format!(
            "instruction {upper} is not allowed in a commit (allowed: {ALLOWED})"
        )),
    }
}

/// Exec form (a JSON array of strings) or shell form.
fn command(args: &str) -> Vec<String> {
    if args.starts_with('[')
        && let Ok(exec) = serde_json::from_str::<Vec<String>>(args)
    {
        return exec;
    }
    vec!["/bin/sh".into(), "-c".into(), args.into()]
}

/// `k=v k2="v 2"`, or the legacy `k value with spaces`.
fn name_values(args: &str, instruction: &str) -> Result<Vec<(String, String)>, String> {
    let words = lex(args, true)?;
    let first_has_equals = words.first().is_some_and(|w| w.contains('='));
    if !first_has_equals {
        // Legacy form: the first word is the name, the rest the value.
        let (name, value) = args
            .split_once(char::is_whitespace)
            .ok_or_else(|| format!("{instruction} {args} has no value: write NAME=value"))?;
        let name = lex(name, false)?.concat();
        let value = lex(value.trim(), false)?.concat();
        return Ok(vec![(name, value)]);
    }
    words
        .into_iter()
        .map(|word| match word.split_once('=') {
            Some(("", _)) => Err(format!("{word:?} has an empty name")),
            Some((name, value)) => Ok((name.to_string(), value.to_string())),
            None => Err(format!(
                "{word:?} is not NAME=value (mixing NAME=value and NAME value forms)"
            )),
        })
        .collect()
}

/// Splits `text` into shell-like words (when `split`; otherwise one word
/// with whitespace kept), removing quotes: '…' literal, "…" with `\`
/// escaping `"`, `\` and `$`, `\` escaping any character outside quotes.
fn lex(text: &str, split: bool) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() && split => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("unterminated single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("unterminated double quote".into()),
                        },
                        Some(c) => word.push(c),
                        None => return Err("unterminated double quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => word.push(c),
                    None => word.push('\\'),
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// `80`, `53/udp`, `8000-8002/tcp` as `ExposedPorts` keys.
fn exposed_ports(word: &str) -> Result<Vec<String>, String> {
    let (ports, protocol) = match word.split_once('/') {
        Some((ports, protocol)) => (ports, protocol.to_ascii_lowercase()),
        None => (word, "tcp".to_string()),
    };
    if !matches!(protocol.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("port {word:?}: protocol must be tcp, udp or sctp"));
    }
    let port = |text: &str| -> Result<u16, String> {
        match text.parse::<u16>() {
            Ok(port) if port > 0 => Ok(port),
            _ => Err(format!(
                "port {word:?}: {text:?} is not a port number (1-65535)"
            )),
        }
    };
    let (first, last) = match ports.split_once('-') {
        Some((first, last)) => (port(first)?, port(last)?),
        None => {
            let p = port(ports)?;
            (p, p)
        }
    };
    if first > last {
        return Err(format!("port range {word:?} runs backwards"));
    }
    Ok((first..=last).map(|p| format!("{p}/{protocol}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(line: &str) -> Result<ConfigChange, ImageError> {
        ConfigChanges::parse(&[line.to_string()]).map(|mut c| c.changes.remove(0))
    }

    fn strs(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_the_allowed_instructions() {
        let table: Vec<(&str, ConfigChange)> = vec![
            (
                r#"CMD ["/bin/web", "--port", "80"]"#,
                ConfigChange::Cmd(strs(&["/bin/web", "--port", "80"])),
            ),
            (
                "CMD echo hello world",
                ConfigChange::Cmd(strs(&["/bin/sh", "-c", "echo hello world"])),
            ),
            (
                "cmd [not json",
                ConfigChange::Cmd(strs(&["/bin/sh", "-c", "[not json"])),
            ),
            (r#"CMD []"#, ConfigChange::Cmd(vec![])),
            (
                r#"ENTRYPOINT ["/bin/web"]"#,
                ConfigChange::Entrypoint(strs(&["/bin/web"])),
            ),
            (
                "ENTRYPOINT exec web",
                ConfigChange::Entrypoint(strs(&["/bin/sh", "-c", "exec web"])),
            ),
            ("ENV A=1", ConfigChange::Env(pairs(&[("A", "1")]))),
            (
                r#"ENV A=1 B="two words" C='x y' D=a\ b"#,
                ConfigChange::Env(pairs(&[
                    ("A", "1"),
                    ("B", "two words"),
                    ("C", "x y"),
                    ("D", "a b"),
                ])),
            ),
            (
                "ENV GREETING hello big world",
                ConfigChange::Env(pairs(&[("GREETING", "hello big world")])),
            ),
            ("ENV EMPTY=", ConfigChange::Env(pairs(&[("EMPTY", "")]))),
            (
                "WORKDIR /srv/app",
                ConfigChange::WorkingDir("/srv/app".into()),
            ),
            ("EXPOSE 80", ConfigChange::Expose(strs(&["80/tcp"]))),
            (
                "EXPOSE 80/tcp 53/UDP 8000-8002",
                ConfigChange::Expose(strs(&[
                    "53/udp", "80/tcp", "8000/tcp", "8001/tcp", "8002/tcp",
                ])),
            ),
            (
                r#"LABEL team=shop "com.example.note"="a b" version=2"#,
                ConfigChange::Label(pairs(&[
                    ("team", "shop"),
                    ("com.example.note", "a b"),
                    ("version", "2"),
                ])),
            ),
            ("USER 1000:1000", ConfigChange::User("1000:1000".into())),
            ("  user   nobody  ", ConfigChange::User("nobody".into())),
        ];
        for (line, expected) in table {
            assert_eq!(
                parse(line).unwrap_or_else(|e| panic!("{line}: {e}")),
                expected,
                "{line}"
            );
        }
    }

    #[test]
    fn refuses_bad_instructions_naming_them() {
        let table = [
            ("RUN rm -rf /", "RUN is not allowed"),
            ("COPY . /app", "COPY is not allowed"),
            ("ONBUILD RUN make", "ONBUILD is not allowed"),
            ("VOLUME /data", "VOLUME is not allowed"),
            ("FROM scratch", "FROM is not allowed"),
            ("", "empty change"),
            ("CMD", "CMD needs a command"),
            ("ENV", "ENV needs"),
            ("ENV A", "has no value"),
            ("ENV A=1 B", "is not NAME=value"),
            ("ENV =1", "empty name"),
            ("LABEL a=\"open", "unterminated double quote"),
            ("EXPOSE 0", "not a port number"),
            ("EXPOSE 70000", "not a port number"),
            ("EXPOSE 80/icmp", "protocol must be"),
            ("EXPOSE 90-80", "runs backwards"),
            ("EXPOSE http", "not a port number"),
            ("WORKDIR /a /b", "one directory"),
            ("USER a b", "one user"),
            ("ENV A=1\nRUN x", "one instruction per change"),
        ];
        for (line, expected) in table {
            let err = parse(line).expect_err(line).to_string();
            assert!(err.contains(expected), "{line:?}: {err}");
            assert!(
                err.contains(&format!("{:?}", line)),
                "the error names the change: {err}"
            );
        }
    }

    #[test]
    fn applies_changes_as_docker_does() {
        let mut config = json!({
            "Env": ["PATH=/bin", "MODE=test"],
            "Cmd": ["--port", "80"],
            "Entrypoint": ["/bin/web"],
            "WorkingDir": "/srv",
            "ExposedPorts": {"8080/tcp": {}},
            "Labels": {"team": "shop"},
            "Unknown": {"kept": true},
        });
        let lines = strs(&[
            "ENV MODE=prod NEW=1",
            "LABEL tier=web",
            "EXPOSE 9090",
            "WORKDIR app/../data",
            "USER nobody",
        ]);
        let changes = ConfigChanges::parse(&lines).unwrap();
        changes.apply(config.as_object_mut().unwrap());
        assert_eq!(
            config,
            json!({
                "Env": ["PATH=/bin", "MODE=prod", "NEW=1"],
                "Cmd": ["--port", "80"],
                "Entrypoint": ["/bin/web"],
                "WorkingDir": "/srv/data",
                "ExposedPorts": {"8080/tcp": {}, "9090/tcp": {}},
                "Labels": {"team": "shop", "tier": "web"},
                "User": "nobody",
                "Unknown": {"kept": true},
            })
        );
    }

    #[test]
    fn entrypoint_resets_cmd_unless_cmd_came_first() {
        let apply = |lines: &[&str]| {
            let mut config = json!({"Cmd": ["base"], "Entrypoint": ["/old"]});
            ConfigChanges::parse(&strs(lines))
                .unwrap()
                .apply(config.as_object_mut().unwrap());
            (config["Entrypoint"].clone(), config["Cmd"].clone())
        };
        assert_eq!(apply(&["CMD [\"new\"]"]), (json!(["/old"]), json!(["new"])));
        assert_eq!(
            apply(&["ENTRYPOINT [\"/e\"]"]),
            (json!(["/e"]), Value::Null)
        );
        assert_eq!(
            apply(&["CMD [\"c\"]", "ENTRYPOINT [\"/e\"]"]),
            (json!(["/e"]), json!(["c"]))
        );
        assert_eq!(
            apply(&["ENTRYPOINT [\"/e\"]", "CMD [\"c\"]"]),
            (json!(["/e"]), json!(["c"]))
        );
    }

    #[test]
    fn fills_missing_and_null_fields() {
        let mut config = json!({"Env": null, "Labels": null});
        ConfigChanges::parse(&strs(&[
            "ENV A=1",
            "LABEL a=b",
            "EXPOSE 1/udp",
            "WORKDIR rel",
        ]))
        .unwrap()
        .apply(config.as_object_mut().unwrap());
        assert_eq!(config["Env"], json!(["A=1"]));
        assert_eq!(config["Labels"], json!({"a": "b"}));
        assert_eq!(config["ExposedPorts"], json!({"1/udp": {}}));
        assert_eq!(config["WorkingDir"], json!("/rel"));
    }
}
