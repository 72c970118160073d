//! `wharf settings ...`: system-wide settings (administrators only).

use anyhow::{Context, Result, bail};
use clap::{ArgAction, Args, Subcommand};
use wharf_auth::Settings;

use super::ServerOption;
use crate::output::{self, OutputOption, render_fields, yes_no};

/// `wharf settings`: the server option and a subcommand.
#[derive(Args)]
pub struct SettingsArgs {
    #[command(flatten)]
    server: ServerOption,
    #[command(subcommand)]
    command: SettingsCommand,
}

/// Reading and changing system settings.
#[derive(Subcommand)]
pub enum SettingsCommand {
    /// Show the settings.
    Show {
        #[command(flatten)]
        output: OutputOption,
    },
    /// Change settings; those not given keep their values.
    Set {
        /// Whether anonymous callers may pull from public projects.
        #[arg(long, value_name = "true|false", action = ArgAction::Set)]
        anonymous_pull: Option<bool>,
        /// Node directories under which pods may mount hostPath volumes,
        /// comma-separated (absolute, without symlinks); "" allows none.
        #[arg(long, value_name = "PATH,...", value_delimiter = ',')]
        host_path_prefixes: Option<Vec<String>>,
        #[command(flatten)]
        output: OutputOption,
    },
}

/// Runs a `wharf settings` subcommand.
pub async fn run(args: SettingsArgs) -> Result<()> {
    let mut client = args.server.client()?;
    match args.command {
        SettingsCommand::Show { output } => {
            let answer = client
                .get(&["settings"])
                .await
                .context("reading the settings")?;
            output::print(output.format, answer, settings_text)
        }
        SettingsCommand::Set {
            anonymous_pull,
            host_path_prefixes,
            output,
        } => {
            if anonymous_pull.is_none() && host_path_prefixes.is_none() {
                bail!(
                    "nothing to change: give --anonymous-pull true|false or --host-path-prefixes PATH,..."
                );
            }
            // PUT replaces all settings: start from the server's, so settings
            // this client does not know about keep their values.
            let mut settings = client
                .get(&["settings"])
                .await
                .context("reading the settings")?;
            if let Some(anonymous_pull) = anonymous_pull {
                settings["anonymous_pull"] = anonymous_pull.into();
            }
            if let Some(prefixes) = host_path_prefixes {
                let prefixes: Vec<String> =
                    prefixes.into_iter().filter(|p| !p.is_empty()).collect();
                settings["host_path_prefixes"] = prefixes.into();
            }
            let answer = client
                .put(&["settings"], &settings)
                .await
                .context("changing the settings")?;
            output::print(output.format, answer, settings_text)
        }
    }
}

fn settings_text(settings: Settings) -> String {
    let prefixes = match settings.host_path_prefixes.is_empty() {
        true => "none (hostPath volumes are refused)".to_string(),
        false => settings.host_path_prefixes.join(", "),
    };
    render_fields(&[
        ("anonymous pull", yes_no(settings.anonymous_pull)),
        ("host path prefixes", prefixes),
    ])
}
