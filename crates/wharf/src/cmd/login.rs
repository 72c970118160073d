//! `wharf login` and `wharf logout`.

use anyhow::{Context, Result};
use clap::Args;

use crate::client::ApiClient;
use crate::client::config::CredentialsFile;
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
    let session = client
        .login(&args.user, &password)
        .await
        .with_context(|| format!("logging in to {} as {}", client.server(), args.user))?;
    println!("logged in to {} as {}", session.server, session.user);
    Ok(())
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
