//! Keeps the machine initialized by its pool's init profile: the agent
//! asks the server for the profile at start and every `interval`, runs it
//! ([`crate::init_profile`]) when its hash differs from the last one
//! applied here (kept in the node dir, so a restart does not run it
//! again), and publishes each run's progress for the status report, which
//! the server turns into the node's `Initialized` condition and taint.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use tokio::sync::watch;
use wharf_api::{InitProfile, InitState, NodeInitProfile, NodeInitialization};

use crate::AgentError;
use crate::api::NodeApi;
use crate::init_profile::InitRunner;

/// How often the agent asks for its pool's profile by default.
pub const DEFAULT_INIT_INTERVAL: Duration = Duration::from_secs(30);
/// The record of the last profile applied, in the node dir.
const APPLIED: &str = "init-applied.json";
/// The last script's output, in the node dir.
const SCRIPT_LOG: &str = "init-script.log";

/// How an agent initializes its machine.
#[derive(Clone, Debug)]
pub struct InitSettings {
    /// Where the last applied profile is recorded (the node dir).
    pub state_dir: PathBuf,
    /// How often the profile is checked for a change.
    pub interval: Duration,
    /// Where the steps act.
    pub runner: InitRunner,
}

impl InitSettings {
    /// Steps acting on this machine, the record kept in `state_dir`.
    pub fn new(state_dir: &Path) -> InitSettings {
        InitSettings {
            state_dir: state_dir.to_path_buf(),
            interval: DEFAULT_INIT_INTERVAL,
            runner: InitRunner::default(),
        }
    }

    /// The last successful run recorded here, if any: what the agent
    /// reports before it has asked the server anything.
    pub fn last_applied(&self) -> Option<NodeInitialization> {
        let text = std::fs::read(self.state_dir.join(APPLIED)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    fn record(&self, run: &NodeInitialization, script_output: &str) {
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&self.state_dir)?;
            std::fs::write(self.state_dir.join(SCRIPT_LOG), script_output)?;
            let record = serde_json::to_vec(run).unwrap_or_default();
            wharf_fs::write_atomic(&self.state_dir.join(APPLIED), &record)
        };
        if let Err(err) = write() {
            tracing::warn!(error = %err, "recording the applied init profile failed");
        }
    }
}

/// Now, in unix milliseconds.
pub(crate) fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Asks the server for the node's pool's profile.
pub(crate) type ProfileSource =
    Box<dyn Fn() -> BoxFuture<'static, Result<NodeInitProfile, AgentError>> + Send + Sync>;

/// The profile of `node` as `api` gives it.
pub(crate) fn profile_of(api: Arc<dyn NodeApi>, node: String) -> ProfileSource {
    Box::new(move || {
        let (api, node) = (api.clone(), node.clone());
        Box::pin(async move { api.init_profile(&node).await })
    })
}

/// Checks the node's profile every `settings.interval` and runs it when
/// it changed, publishing progress on `published`; never returns.
pub(crate) async fn keep_initialized(
    source: ProfileSource,
    settings: InitSettings,
    published: watch::Sender<Option<NodeInitialization>>,
) {
    loop {
        match source().await {
            Ok(answer) => match (answer.profile, answer.hash) {
                (Some(profile), Some(hash)) => {
                    let done = published.borrow().as_ref().is_some_and(|run| {
                        run.profile_hash == hash && run.state == InitState::Succeeded
                    });
                    if !done {
                        run_profile(&settings, profile, hash, &published).await;
                    }
                }
                // No profile (any more): nothing to report.
                _ => {
                    published.send_if_modified(|run| run.take().is_some());
                }
            },
            Err(err) => tracing::warn!(error = %err, "reading the node's init profile failed"),
        }
        tokio::time::sleep(settings.interval).await;
    }
}

/// One run of `profile` on a blocking thread, each step published as it
/// starts; the outcome published and, if it succeeded, recorded.
async fn run_profile(
    settings: &InitSettings,
    profile: InitProfile,
    hash: String,
    published: &watch::Sender<Option<NodeInitialization>>,
) {
    let mut run = NodeInitialization {
        profile_hash: hash,
        state: InitState::Running,
        started_at: Some(now_millis()),
        ..NodeInitialization::default()
    };
    published.send_replace(Some(run.clone()));
    tracing::info!(hash = run.profile_hash, "running the pool's init profile");
    let runner = settings.runner.clone();
    let progress = published.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        runner.run(&profile, |step| {
            progress.send_modify(|run| {
                if let Some(run) = run {
                    run.step = Some(step.into());
                }
            })
        })
    })
    .await;
    let current = published.borrow().clone().unwrap_or(run);
    run = current;
    run.finished_at = Some(now_millis());
    match outcome {
        Ok(Ok(report)) => {
            run.state = InitState::Succeeded;
            run.step = None;
            run.message = None;
            settings.record(&run, &report.script_output);
        }
        Ok(Err(failure)) => {
            tracing::warn!(%failure, "the pool's init profile failed");
            run.state = InitState::Failed;
            run.message = Some(failure.to_string());
        }
        Err(panic) => {
            run.state = InitState::Failed;
            run.message = Some(format!("the init run stopped: {panic}"));
        }
    }
    published.send_replace(Some(run));
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use wharf_api::InitFile;

    use super::*;

    /// A server whose pool profile the test sets.
    type Profiles = Arc<Mutex<Option<InitProfile>>>;

    fn source(profiles: &Profiles) -> ProfileSource {
        let profiles = profiles.clone();
        Box::new(move || {
            let profile = profiles.lock().unwrap().clone();
            Box::pin(async move { Ok(NodeInitProfile::new(Some("web".into()), profile)) })
        })
    }

    fn profile(path: &Path, content: &str, script: &str) -> InitProfile {
        InitProfile {
            files: vec![InitFile {
                path: path.display().to_string(),
                content: content.into(),
                mode: None,
            }],
            script: Some(script.into()),
            ..InitProfile::default()
        }
    }

    async fn settled(
        published: &mut watch::Receiver<Option<NodeInitialization>>,
        hash: &str,
    ) -> NodeInitialization {
        let wait = published.wait_for(|run| {
            run.as_ref().is_some_and(|r| {
                r.profile_hash == hash
                    && matches!(r.state, InitState::Succeeded | InitState::Failed)
            })
        });
        let run = tokio::time::timeout(Duration::from_secs(10), wait).await;
        run.unwrap().unwrap().clone().unwrap()
    }

    #[tokio::test]
    async fn a_changed_profile_runs_again_and_a_restart_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let count = dir.path().join("count");
        let script = format!("echo x >> {}", count.display());
        let runs = || {
            std::fs::read_to_string(&count)
                .unwrap_or_default()
                .lines()
                .count()
        };
        let mut settings = InitSettings::new(&dir.path().join("node"));
        settings.interval = Duration::from_millis(50);
        settings.runner.root = dir.path().join("root");
        let first = profile(Path::new("/etc/one"), "1", &script);
        let api: Profiles = Arc::new(Mutex::new(Some(first.clone())));
        let (published, mut seen) = watch::channel(None);
        let task = tokio::spawn(keep_initialized(source(&api), settings.clone(), published));
        let run = settled(&mut seen, &first.hash()).await;
        assert_eq!(run.state, InitState::Succeeded, "{run:?}");
        assert!(run.started_at.is_some() && run.finished_at >= run.started_at);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(runs(), 1, "an unchanged profile is not run again");

        let second = profile(Path::new("/etc/two"), "2", &script);
        *api.lock().unwrap() = Some(second.clone());
        settled(&mut seen, &second.hash()).await;
        assert_eq!(runs(), 2);
        assert!(settings.runner.root.join("etc/two").exists());
        task.abort();

        // Restarted: the record says the profile is applied already.
        let recorded = settings.last_applied().unwrap();
        assert_eq!(recorded.profile_hash, second.hash());
        let (published, mut seen) = watch::channel(Some(recorded));
        let task = tokio::spawn(keep_initialized(source(&api), settings, published));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(runs(), 2);
        assert_eq!(
            settled(&mut seen, &second.hash()).await.state,
            InitState::Succeeded
        );

        // A failing profile is reported with its step and reason.
        let bad = profile(Path::new("/etc/three"), "3", "echo broken >&2; exit 4");
        *api.lock().unwrap() = Some(bad.clone());
        let run = settled(&mut seen, &bad.hash()).await;
        assert_eq!(run.state, InitState::Failed);
        assert_eq!(run.step.as_deref(), Some("script"));
        assert!(
            run.message.as_deref().unwrap().contains("broken"),
            "{run:?}"
        );
        task.abort();
    }
}
