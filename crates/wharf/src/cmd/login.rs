//! `wharf login` and `wharf logout`.

use anyhow::{Context, Result};
use clap::Args;

use crate::client::config::CredentialsFile;
use crate::client::{ApiClient, parse_server_url};
use crate::password;

/// Options of `wharf login`.
#[derive(Args)]
pub struct LoginArgs {
    /// Server URL, e.g. http://registry.example:7700.
    url: String,
    /// User name.
    #[arg(short = 'u', long = "username")]
    user: String,
    /// Read the password from the first line of standard input instead of
    /// asking on the terminal.
    #[arg(long)]
    password_stdin: bool,
    /// Project of deployments and pods for commands without -p (change it
    /// later with wharf project use).
    #[arg(short = 'p', long)]
    project: Option<String>,
}

/// Logs in and stores the tokens (never the password).
pub async fn login(args: LoginArgs) -> Result<()> {
    let mut client = ApiClient::anonymous(&args.url)?;
    let password = if args.password_stdin {
        password::from_stdin(1)?.remove(0)
    } else {
        password::prompt(&format!(
            "password for {} at {}: ",
            args.user,
            client.server()
        ))?
    };
    let project = args
        .project
        .or_else(|| earlier_default_project(client.server(), &args.user));
    let session = client
        .login(&args.user, &password, project)
        .await
        .with_context(|| format!("logging in to {} as {}", client.server(), args.user))?;
    match &session.default_project {
        Some(project) => println!(
            "logged in to {} as {} (default project {project})",
            session.server, session.user
        ),
        None => println!("logged in to {} as {}", session.server, session.user),
    }
    Ok(())
}

/// The default project of the stored login when it is for the same server
/// and user: logging in again (an expired session) keeps it.
fn earlier_default_project(server: &str, user: &str) -> Option<String> {
    let earlier = CredentialsFile::locate().ok()?.load().ok()??;
    let same_server = parse_server_url(&earlier.server).ok()? == parse_server_url(server).ok()?;
    (same_server && earlier.user == user).then_some(earlier.default_project?)
}

/// Deletes the stored login.
///
/// The server keeps no sessions, so tokens already issued stay valid until
/// they expire; deleting the file makes sure this machine no longer has them.
pub fn logout() -> Result<()> {
    let credentials = CredentialsFile::locate()?;
    let session = credentials.load().ok().flatten();
    if credentials.remove()? {
        match session {
            Some(session) => println!(
                "logged out of {} as {} (deleted {})",
                session.server,
                session.user,
                credentials.path().display()
            ),
            None => println!("deleted {}", credentials.path().display()),
        }
    } else {
        println!(
            "not logged in: there is no {}",
            credentials.path().display()
        );
    }
    Ok(())
}
