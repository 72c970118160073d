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
            output,
        } => {
            let Some(anonymous_pull) = anonymous_pull else {
                bail!("nothing to change: give --anonymous-pull true|false");
            };
            // PUT replaces all settings: start from the server's, so settings
            // this client does not know about keep their values.
            let mut settings = client
                .get(&["settings"])
                .await
                .context("reading the settings")?;
            settings["anonymous_pull"] = anonymous_pull.into();
            let answer = client
                .put(&["settings"], &settings)
                .await
                .context("changing the settings")?;
            output::print(output.format, answer, settings_text)
        }
    }
}

fn settings_text(settings: Settings) -> String {
    render_fields(&[("anonymous pull", yes_no(settings.anonymous_pull))])
}
