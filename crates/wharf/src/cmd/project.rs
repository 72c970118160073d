//! `wharf project ...`: projects and their members.

use anyhow::{Context, Result, bail};
use clap::{ArgAction, Args, Subcommand};
use serde_json::{Value, json};
use wharf_auth::{Member, Project, ProjectWithUsage, Role};

use super::ServerOption;
use crate::output::{self, OutputOption, Table, human_size, render_fields, rfc3339, yes_no};
use crate::units;

/// `wharf project`: the server option and a subcommand.
#[derive(Args)]
pub struct ProjectArgs {
    #[command(flatten)]
    server: ServerOption,
    #[command(subcommand)]
    command: ProjectCommand,
}

/// Managing projects.
#[derive(Subcommand)]
pub enum ProjectCommand {
    /// Create a project; you become its project admin.
    Create {
        /// Project name, the first part of its repository names.
        name: String,
        /// Let every logged-in user (and anonymous users, if allowed) pull.
        #[arg(long)]
        public: bool,
        /// Storage quota, e.g. 10GiB (setting one needs a system administrator).
        #[arg(long, value_parser = units::parse_size)]
        quota: Option<u64>,
        /// Make it a pull-through cache of this replication endpoint
        /// (system administrators): PROJECT/<path> pulls <path> from it.
        #[arg(long, value_name = "ENDPOINT")]
        proxy_endpoint: Option<String>,
        /// How long a cached tag is served before it is checked upstream
        /// again, e.g. 30s, 10m (default 1h).
        #[arg(long, value_parser = units::parse_duration, requires = "proxy_endpoint")]
        proxy_ttl: Option<std::time::Duration>,
        #[command(flatten)]
        output: OutputOption,
    },
    /// List the projects you can see.
    List {
        #[command(flatten)]
        output: OutputOption,
    },
    /// Show a project and its storage usage.
    Show {
        /// Project name.
        name: String,
        #[command(flatten)]
        output: OutputOption,
    },
    /// Make a project the default of get, describe, delete, scale, logs,
    /// image list, and apply of manifests without a namespace, when no -p
    /// is given (kept with the login, as a kubeconfig context's namespace).
    Use {
        /// Project name.
        name: String,
    },
    /// Delete a project with its deployments and pods; refused while it
    /// holds repositories, unless --force, which deletes them too.
    Delete {
        /// Project name.
        name: String,
        /// Also delete every repository and image of the project.
        #[arg(long)]
        force: bool,
    },
    /// Change a project's visibility, quota, privileged setting or default tier.
    Update {
        /// Project name.
        name: String,
        /// Whether every logged-in user may pull.
        #[arg(long, value_name = "true|false", action = ArgAction::Set)]
        public: Option<bool>,
        /// Storage quota, e.g. 10GiB, or `none` to remove it (system administrators only).
        #[arg(long, value_name = "SIZE|none", value_parser = parse_quota)]
        quota: Option<QuotaChange>,
        /// Let its workloads be privileged: `privileged`, `hostPID`, `hostIPC`,
        /// `hostNetwork`, added capabilities, seccomp `Unconfined` (system
        /// administrators only).
        #[arg(long, value_name = "true|false", action = ArgAction::Set)]
        allow_privileged: Option<bool>,
        /// The tier its Deployments get when they name none, as the
        /// `wharf.io/tier` annotation names one (`core`, `batch;preferred`),
        /// or `none` to remove it.
        #[arg(long, value_name = "TIER|none")]
        tier: Option<String>,
        #[command(flatten)]
        output: OutputOption,
    },
    /// Project members and their roles.
    #[command(subcommand)]
    Member(MemberCommand),
}

/// Managing the members of a project (project admins).
#[derive(Subcommand)]
pub enum MemberCommand {
    /// Add a user to a project, or change their role.
    Add {
        /// Project name.
        project: String,
        /// User name.
        user: String,
        /// projectAdmin, maintainer (pull, push, delete), developer (pull,
        /// push) or guest (pull).
        #[arg(long, value_parser = parse_role)]
        role: Role,
        #[command(flatten)]
        output: OutputOption,
    },
    /// Remove a user from a project.
    Remove {
        /// Project name.
        project: String,
        /// User name.
        user: String,
    },
    /// List a project's members.
    List {
        /// Project name.
        project: String,
        #[command(flatten)]
        output: OutputOption,
    },
}

/// A new quota: a size, or none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotaChange(Option<u64>);

fn parse_quota(text: &str) -> Result<QuotaChange, String> {
    if text.trim().eq_ignore_ascii_case("none") {
        return Ok(QuotaChange(None));
    }
    units::parse_size(text).map(|bytes| QuotaChange(Some(bytes)))
}

fn parse_role(text: &str) -> Result<Role, String> {
    text.parse()
        .map_err(|err: wharf_auth::AuthError| err.to_string())
}

/// Runs a `wharf project` subcommand.
pub async fn run(args: ProjectArgs) -> Result<()> {
    let mut client = args.server.client()?;
    match args.command {
        ProjectCommand::Create {
            name,
            public,
            quota,
            proxy_endpoint,
            proxy_ttl,
            output,
        } => {
            let mut body = json!({ "name": name, "public": public, "quota_bytes": quota });
            if let Some(endpoint) = proxy_endpoint {
                body["proxy_cache"] =
                    json!({ "endpoint": endpoint, "ttl_secs": proxy_ttl.map(|t| t.as_secs()) });
            }
            let answer = client
                .post(&["projects"], &body)
                .await
                .with_context(|| format!("creating project {name}"))?;
            output::print(output.format, answer, |project: Project| {
                format!("created project {}\n", project.name)
            })
        }
        ProjectCommand::List { output } => {
            let answer = client
                .get(&["projects"])
                .await
                .context("listing projects")?;
            output::print(output.format, answer, project_table)
        }
        ProjectCommand::Show { name, output } => {
            let answer = client
                .get(&["projects", &name])
                .await
                .with_context(|| format!("showing project {name}"))?;
            output::print(output.format, answer, project_details)
        }
        ProjectCommand::Use { name } => {
            // A typo would otherwise surface only at the next get.
            client
                .get(&["projects", &name])
                .await
                .with_context(|| format!("using project {name}"))?;
            client.set_default_project(&name)?;
            println!("default project: {name}");
            Ok(())
        }
        ProjectCommand::Delete { name, force } => {
            let query = [("force", force.to_string())];
            client
                .delete_with_query(&["projects", &name], &query)
                .await
                .with_context(|| format!("deleting project {name}"))?;
            println!("deleted project {name}");
            Ok(())
        }
        ProjectCommand::Update {
            name,
            public,
            quota,
            allow_privileged,
            tier,
            output,
        } => {
            let mut body = json!({});
            if let Some(tier) = tier {
                // The server takes "" as "remove".
                body["default_tier"] = if tier == "none" { "" } else { &tier }.into();
            }
            if let Some(allow) = allow_privileged {
                body["allow_privileged"] = allow.into();
            }
            if let Some(public) = public {
                body["public"] = public.into();
            }
            if let Some(QuotaChange(quota)) = quota {
                // `null` removes the quota; an absent field leaves it alone.
                body["quota_bytes"] = quota.map_or(Value::Null, Value::from);
            }
            if body.as_object().is_some_and(|fields| fields.is_empty()) {
                bail!(
                    "nothing to change: give --public true|false, --quota SIZE|none, --allow-privileged true|false and/or --tier TIER|none"
                );
            }
            let answer = client
                .patch(&["projects", &name], &body)
                .await
                .with_context(|| format!("updating project {name}"))?;
            output::print(output.format, answer, |project: Project| {
                let tier = match &project.default_tier {
                    Some(tier) => format!(", default tier {tier}"),
                    None => String::new(),
                };
                format!(
                    "updated project {}: public {}, quota {}, allow privileged {}{tier}\n",
                    project.name,
                    yes_no(project.public),
                    quota_text(project.quota_bytes),
                    yes_no(project.allow_privileged)
                )
            })
        }
        ProjectCommand::Member(command) => run_member(&mut client, command).await,
    }
}

async fn run_member(client: &mut crate::client::ApiClient, command: MemberCommand) -> Result<()> {
    match command {
        MemberCommand::Add {
            project,
            user,
            role,
            output,
        } => {
            let answer = client
                .put(
                    &["projects", &project, "members", &user],
                    &json!({ "role": role.as_str() }),
                )
                .await
                .with_context(|| format!("making {user} a {role} of project {project}"))?;
            output::print(output.format, answer, |member: Member| {
                format!(
                    "{} is now {} in project {}\n",
                    member.user, member.role, member.project
                )
            })
        }
        MemberCommand::Remove { project, user } => {
            client
                .delete(&["projects", &project, "members", &user])
                .await
                .with_context(|| format!("removing {user} from project {project}"))?;
            println!("removed {user} from project {project}");
            Ok(())
        }
        MemberCommand::List { project, output } => {
            let answer = client
                .get(&["projects", &project, "members"])
                .await
                .with_context(|| format!("listing the members of project {project}"))?;
            output::print(output.format, answer, |members: Vec<Member>| {
                let mut table = Table::new(&["USER", "ROLE"]);
                for member in members {
                    table.row([member.user, member.role.to_string()]);
                }
                table.render()
            })
        }
    }
}

fn project_table(projects: Vec<ProjectWithUsage>) -> String {
    let mut table = Table::new(&["NAME", "PUBLIC", "USAGE", "QUOTA", "CREATED"]);
    for view in projects {
        table.row([
            view.project.name,
            yes_no(view.project.public),
            human_size(view.usage_bytes),
            quota_text(view.project.quota_bytes),
            rfc3339(view.project.created_at),
        ]);
    }
    table.render()
}

fn project_details(view: ProjectWithUsage) -> String {
    render_fields(&[
        ("name", view.project.name),
        ("public", yes_no(view.project.public)),
        ("usage", human_size(view.usage_bytes)),
        ("quota", quota_text(view.project.quota_bytes)),
        ("allow privileged", yes_no(view.project.allow_privileged)),
        (
            "default tier",
            view.project.default_tier.unwrap_or_else(|| "none".into()),
        ),
        (
            "proxy cache",
            view.project.proxy_cache.map_or_else(
                || "no".into(),
                |p| {
                    format!(
                        "endpoint {}, tags checked after {}s",
                        p.endpoint, p.ttl_secs
                    )
                },
            ),
        ),
        ("created", rfc3339(view.project.created_at)),
    ])
}

fn quota_text(quota: Option<u64>) -> String {
    quota.map_or_else(|| "none".to_string(), human_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_parse_sizes_or_none() {
        assert_eq!(parse_quota("10GiB"), Ok(QuotaChange(Some(10 << 30))));
        assert_eq!(parse_quota("none"), Ok(QuotaChange(None)));
        assert!(parse_quota("lots").is_err());
    }

    #[test]
    fn roles_parse_with_a_helpful_error() {
        assert_eq!(parse_role("projectAdmin"), Ok(Role::ProjectAdmin));
        assert_eq!(parse_role("developer"), Ok(Role::Developer));
        let err = parse_role("owner").unwrap_err();
        assert!(err.contains("maintainer"), "{err}");
    }

    #[test]
    fn project_tables_show_usage_and_quota() {
        let view = ProjectWithUsage {
            project: Project {
                name: "team".into(),
                public: true,
                quota_bytes: Some(10 << 30),
                allow_privileged: false,
                default_tier: None,
                proxy_cache: None,
                created_at: 0,
            },
            usage_bytes: 1536 << 20,
        };
        assert_eq!(
            project_table(vec![view]),
            "NAME  PUBLIC  USAGE    QUOTA   CREATED\n\
             team  yes     1.5 GiB  10 GiB  1970-01-01T00:00:00Z\n"
        );
    }
}
