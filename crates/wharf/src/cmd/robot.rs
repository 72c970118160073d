//! `wharf robot ...`: robot accounts, for CI and other machines.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde::Deserialize;
use serde_json::json;
use wharf_auth::{Robot, RobotPermission};

use super::ServerOption;
use crate::client::{ApiClient, unix_now};
use crate::output::{self, OutputOption, Table, rfc3339, yes_no};
use crate::units;

/// `wharf robot`: the server option and a subcommand.
#[derive(Args)]
pub struct RobotArgs {
    #[command(flatten)]
    server: ServerOption,
    #[command(subcommand)]
    command: RobotCommand,
}

/// Managing robot accounts (project admins).
#[derive(Subcommand)]
pub enum RobotCommand {
    /// Create a robot account and print its secret, once.
    Create {
        /// The project the robot belongs to.
        project: String,
        /// Short name; the robot's full name is robot$PROJECT+NAME.
        name: String,
        /// What it may do in PROJECT: pull, push, delete, admin, comma-separated.
        #[arg(long, value_name = "pull,push", required_unless_present = "permission")]
        actions: Option<String>,
        /// A right outside projects instead of actions: metrics:read makes a
        /// robot that only scrapes GET /metrics (system administrators).
        #[arg(long, value_name = "metrics:read", conflicts_with_all = ["actions", "also"])]
        permission: Vec<String>,
        /// Write the metrics:read robot's API token to this file (mode
        /// 0600), for Prometheus' authorization.credentials_file.
        #[arg(long, value_name = "PATH", requires = "permission")]
        token_file: Option<PathBuf>,
        /// Lifetime, e.g. 30d [default: never expires].
        #[arg(long, value_parser = units::parse_duration)]
        expires: Option<Duration>,
        /// Access to another project you administer, e.g. other-project=pull
        /// (repeatable).
        #[arg(long, value_name = "PROJECT=ACTIONS", value_parser = parse_also)]
        also: Vec<(String, String)>,
        #[command(flatten)]
        output: OutputOption,
    },
    /// List a project's robot accounts.
    List {
        /// Project name.
        project: String,
        #[command(flatten)]
        output: OutputOption,
    },
    /// Delete a robot account; its secret stops working.
    Delete {
        /// Project name.
        project: String,
        /// Short or full robot name.
        name: String,
    },
    /// Disable a robot account: no more logins, and the tokens it holds
    /// stop working at once.
    Disable {
        /// Project name.
        project: String,
        /// Short or full robot name.
        name: String,
        #[command(flatten)]
        output: OutputOption,
    },
    /// Enable a disabled robot account again; it logs in anew with its secret.
    Enable {
        /// Project name.
        project: String,
        /// Short or full robot name.
        name: String,
        #[command(flatten)]
        output: OutputOption,
    },
}

fn parse_also(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((project, actions)) if !project.is_empty() && !actions.is_empty() => {
            Ok((project.to_string(), actions.to_string()))
        }
        _ => Err(format!(
            "invalid --also {text:?}: expected PROJECT=ACTIONS, e.g. other-project=pull"
        )),
    }
}

/// The answer to creating a robot: the account and its secret (and for a
/// metrics:read robot, its long-lived API token).
#[derive(Deserialize)]
struct CreatedRobot {
    robot: Robot,
    secret: String,
    #[serde(default)]
    token: Option<String>,
}

/// Runs a `wharf robot` subcommand.
pub async fn run(args: RobotArgs) -> Result<()> {
    let mut client = args.server.client()?;
    match args.command {
        RobotCommand::Create {
            project,
            name,
            actions,
            permission,
            token_file,
            expires,
            also,
            output,
        } => {
            let also: BTreeMap<String, String> = also.into_iter().collect();
            let body = json!({
                "name": name,
                "actions": actions.unwrap_or_default(),
                "system_permissions": permission,
                "expires_in_secs": expires.map(|d| d.as_secs()),
                "also": also,
            });
            let answer = client
                .post(&["projects", &project, "robots"], &body)
                .await
                .with_context(|| format!("creating robot {name} in project {project}"))?;
            if let Some(path) = &token_file {
                write_token_file(path, &answer)?;
            }
            output::print(output.format, answer, |created: CreatedRobot| {
                created_text(&created, token_file.as_deref())
            })
        }
        RobotCommand::List { project, output } => {
            let answer = client
                .get(&["projects", &project, "robots"])
                .await
                .with_context(|| format!("listing the robots of project {project}"))?;
            output::print(output.format, answer, robot_table)
        }
        RobotCommand::Delete { project, name } => {
            client
                .delete(&["projects", &project, "robots", &name])
                .await
                .with_context(|| format!("deleting robot {name} of project {project}"))?;
            println!("deleted robot {name} of project {project}");
            Ok(())
        }
        RobotCommand::Disable {
            project,
            name,
            output,
        } => set_disabled(&mut client, &project, &name, true, output).await,
        RobotCommand::Enable {
            project,
            name,
            output,
        } => set_disabled(&mut client, &project, &name, false, output).await,
    }
}

/// What `robot create` tells people: the secret, and a metrics:read
/// robot's token unless it went to a file.
fn created_text(created: &CreatedRobot, token_file: Option<&Path>) -> String {
    let robot = &created.robot;
    let rights = if robot.system_permissions.is_empty() {
        permissions_text(&robot.permissions)
    } else {
        let names: Vec<&str> = robot
            .system_permissions
            .iter()
            .map(|p| p.as_str())
            .collect();
        names.join(",")
    };
    let mut text = format!(
        "created robot {} ({rights}; expires {})\nsecret: {}\n",
        robot.name,
        expiry_text(robot.expires_at),
        created.secret
    );
    match (&created.token, token_file) {
        (Some(_), Some(path)) => {
            text.push_str(&format!("token written to {}\n", path.display()));
        }
        (Some(token), None) => text.push_str(&format!("token: {token}\n")),
        (None, _) => {}
    }
    text.push_str("save the secret now: it cannot be shown again\n");
    text
}

/// Writes the token of a created metrics:read robot to `path`, readable by
/// its owner only.
fn write_token_file(path: &Path, answer: &serde_json::Value) -> Result<()> {
    let token = answer["token"]
        .as_str()
        .context("the server returned no token for this robot")?;
    wharf_fs::AtomicWrite::new(path)
        .mode(0o600)
        .write(token.as_bytes())
        .with_context(|| format!("writing the token to {}", path.display()))
}

async fn set_disabled(
    client: &mut ApiClient,
    project: &str,
    name: &str,
    disabled: bool,
    output: OutputOption,
) -> Result<()> {
    let path = ["projects", project, "robots", name, "disabled"];
    let what = format!("robot {name} of project {project}");
    super::set_disabled(client, &path, &what, disabled, output, |robot: Robot| {
        format!("robot {}", robot.name)
    })
    .await
}

fn robot_table(robots: Vec<Robot>) -> String {
    let mut table = Table::new(&[
        "NAME",
        "PERMISSIONS",
        "EXPIRES",
        "DISABLED",
        "CREATED BY",
        "CREATED",
    ]);
    for robot in robots {
        table.row([
            robot.name,
            permissions_text(&robot.permissions),
            expiry_text(robot.expires_at),
            yes_no(robot.disabled),
            robot.created_by,
            rfc3339(robot.created_at),
        ]);
    }
    table.render()
}

/// `app:pull,push other:pull`
fn permissions_text(permissions: &[RobotPermission]) -> String {
    permissions
        .iter()
        .map(|p| format!("{}:{}", p.project, p.actions))
        .collect::<Vec<_>>()
        .join(" ")
}

fn expiry_text(expires_at_ms: Option<u64>) -> String {
    match expires_at_ms {
        None => "never".to_string(),
        Some(ms) if ms / 1000 <= unix_now() => format!("{} (expired)", rfc3339(ms)),
        Some(ms) => rfc3339(ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_auth::Actions;

    #[test]
    fn also_takes_project_and_actions() {
        assert_eq!(
            parse_also("other=pull,push"),
            Ok(("other".into(), "pull,push".into()))
        );
        assert!(parse_also("other").is_err());
        assert!(parse_also("=pull").is_err());
    }

    #[test]
    fn permissions_read_as_project_and_actions() {
        let permissions = [
            RobotPermission {
                project: "app".into(),
                actions: Actions::parse_list("push,pull").unwrap(),
            },
            RobotPermission {
                project: "base".into(),
                actions: Actions::parse_list("pull").unwrap(),
            },
        ];
        assert_eq!(permissions_text(&permissions), "app:pull,push base:pull");
        assert_eq!(expiry_text(None), "never");
        assert_eq!(expiry_text(Some(1000)), "1970-01-01T00:00:01Z (expired)");
    }

    #[test]
    fn a_metrics_robot_shows_its_permission_and_token() {
        let answer = serde_json::json!({
            "robot": {"name": "robot$ops+prom", "permissions": [],
                      "system_permissions": ["metrics:read"], "expires_at": null,
                      "disabled": false, "created_by": "admin", "created_at": 0},
            "secret": "s3cret",
            "token": "tok.en",
        });
        let created: CreatedRobot = serde_json::from_value(answer.clone()).unwrap();
        let text = created_text(&created, None);
        assert!(text.starts_with("created robot robot$ops+prom (metrics:read; expires never)\n"));
        assert!(text.contains("token: tok.en\n"), "{text}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        write_token_file(&path, &answer).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "tok.en");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(created_text(&created, Some(&path)).contains("token written to "));
    }
}
