//! `wharf user ...`: local users.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde::Deserialize;
use serde_json::json;
use wharf_auth::User;

use super::ServerOption;
use crate::client::ApiClient;
use crate::output::{self, OutputOption, Table, rfc3339, yes_no};
use crate::password;

/// `wharf user`: the server option and a subcommand.
#[derive(Args)]
pub struct UserArgs {
    #[command(flatten)]
    server: ServerOption,
    #[command(subcommand)]
    command: UserCommand,
}

/// Managing local users.
#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a user (administrators only).
    Create {
        /// User name.
        name: String,
        /// Read the password from the first line of standard input instead
        /// of asking on the terminal.
        #[arg(long)]
        password_stdin: bool,
        /// Make the user a system administrator.
        #[arg(long)]
        admin: bool,
        #[command(flatten)]
        output: OutputOption,
    },
    /// List users (administrators only).
    List {
        #[command(flatten)]
        output: OutputOption,
    },
    /// Show one user (administrators, or the user themself).
    Show {
        /// User name.
        name: String,
        #[command(flatten)]
        output: OutputOption,
    },
    /// Delete a user (administrators only).
    Delete {
        /// User name.
        name: String,
    },
    /// Set a user's password; the user's existing sessions end.
    ///
    /// Administrators set anyone's password. Other users change only their
    /// own and must give the current one: with --password-stdin, standard
    /// input then holds two lines, the current password and the new one.
    /// After changing your own password you are logged in again with it.
    Passwd {
        /// User name.
        name: String,
        /// Read the new password (and, when changing your own password as a
        /// non-administrator, the current one on the line before it) from
        /// standard input instead of asking on the terminal.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Disable a user: no more logins, and their tokens stop working
    /// (administrators only).
    Disable {
        /// User name.
        name: String,
        #[command(flatten)]
        output: OutputOption,
    },
    /// Enable a disabled user again (administrators only).
    Enable {
        /// User name.
        name: String,
        #[command(flatten)]
        output: OutputOption,
    },
    /// Set a user's inventory role (administrators only): clusterAdmin
    /// manages clusters, pools, classes and grants; poolOperator cordons,
    /// drains, joins and decommissions nodes; viewer reads the inventory
    /// and cost; none removes it.
    SetRole {
        /// User name.
        name: String,
        /// The role.
        #[arg(value_parser = ["clusterAdmin", "poolOperator", "viewer", "none"])]
        role: String,
        #[command(flatten)]
        output: OutputOption,
    },
}

/// Runs a `wharf user` subcommand.
pub async fn run(args: UserArgs) -> Result<()> {
    let mut client = args.server.client()?;
    match args.command {
        UserCommand::Create {
            name,
            password_stdin,
            admin,
            output,
        } => {
            let password = new_password(password_stdin, &name)?;
            let body = json!({ "name": name, "password": password, "admin": admin });
            let answer = client
                .post(&["users"], &body)
                .await
                .with_context(|| format!("creating user {name}"))?;
            output::print(output.format, answer, |user: User| {
                let role = if user.admin { " (administrator)" } else { "" };
                format!("created user {}{role}\n", user.name)
            })
        }
        UserCommand::List { output } => {
            let answer = client.get(&["users"]).await.context("listing users")?;
            output::print(output.format, answer, user_table)
        }
        UserCommand::Show { name, output } => {
            let answer = client
                .get(&["users", &name])
                .await
                .with_context(|| format!("showing user {name}"))?;
            output::print(output.format, answer, |user: User| user_table(vec![user]))
        }
        UserCommand::Delete { name } => {
            client
                .delete(&["users", &name])
                .await
                .with_context(|| format!("deleting user {name}"))?;
            println!("deleted user {name}");
            Ok(())
        }
        UserCommand::Passwd {
            name,
            password_stdin,
        } => set_password(&mut client, &name, password_stdin).await,
        UserCommand::Disable { name, output } => {
            set_disabled(&mut client, &name, true, output).await
        }
        UserCommand::Enable { name, output } => {
            set_disabled(&mut client, &name, false, output).await
        }
        UserCommand::SetRole { name, role, output } => {
            let body = json!({ "role": (role != "none").then_some(&role) });
            let answer = client
                .put(&["users", &name, "inventoryrole"], &body)
                .await
                .with_context(|| format!("setting the inventory role of {name}"))?;
            output::print(output.format, answer, |user: User| user_table(vec![user]))
        }
    }
}

fn user_table(users: Vec<User>) -> String {
    let mut table = Table::new(&["NAME", "ADMIN", "INVENTORY ROLE", "DISABLED", "CREATED"]);
    for user in users {
        table.row([
            user.name,
            yes_no(user.admin),
            user.inventory_role
                .map_or("<none>", |r| r.as_str())
                .to_string(),
            yes_no(user.disabled),
            rfc3339(user.created_at),
        ]);
    }
    table.render()
}

/// A new password from standard input or, asked twice, from the terminal.
fn new_password(from_stdin: bool, user: &str) -> Result<String> {
    if from_stdin {
        Ok(password::from_stdin(1)?.remove(0))
    } else {
        password::prompt_new(&format!("new password for {user}: "))
    }
}

async fn set_password(client: &mut ApiClient, name: &str, from_stdin: bool) -> Result<()> {
    #[derive(Deserialize)]
    struct Me {
        admin: bool,
    }
    let changing_own = client.user() == Some(name);
    // The server wants the current password from users changing their own.
    let needs_current = changing_own && {
        let me: Me = serde_json::from_value(client.get(&["me"]).await?)
            .context("the server's answer to /me is not what wharf expects")?;
        !me.admin
    };
    let (current, new) = match (from_stdin, needs_current) {
        (true, true) => {
            let mut lines = password::from_stdin(2)?;
            let new = lines.pop();
            (lines.pop(), new.unwrap_or_default())
        }
        (true, false) => (None, password::from_stdin(1)?.remove(0)),
        (false, true) => (
            Some(password::prompt("current password: ")?),
            new_password(false, name)?,
        ),
        (false, false) => (None, new_password(false, name)?),
    };
    let mut body = json!({ "password": new });
    if let Some(current) = current {
        body["current_password"] = current.into();
    }
    client
        .put_with_password(&["users", name, "password"], &body)
        .await
        .with_context(|| format!("changing the password of {name}"))?;
    println!("changed the password of {name}");
    if changing_own {
        // The change ended every session of this user, this one included.
        let default_project = client.default_project().map(str::to_string);
        let relogin = client.login(name, &new, default_project).await;
        relogin.with_context(|| {
            format!(
                "logging in again as {name}: run wharf login {} -u {name}",
                client.server()
            )
        })?;
        println!(
            "logged in to {} as {name} with the new password",
            client.server()
        );
    }
    Ok(())
}

async fn set_disabled(
    client: &mut ApiClient,
    name: &str,
    disabled: bool,
    output: OutputOption,
) -> Result<()> {
    let path = ["users", name, "disabled"];
    super::set_disabled(
        client,
        &path,
        &format!("user {name}"),
        disabled,
        output,
        |user: User| format!("user {}", user.name),
    )
    .await
}
