//! Replication filter patterns against hostile input: every pattern a
//! policy may hold must match any repository or tag name in bounded time,
//! since intake matches each pushed tag on the request's worker. Times
//! adversarial patterns (exponential for a backtracking matcher) and
//! ordinary ones against names of the longest allowed lengths, and fails
//! if any single match takes longer than the bound.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use clap::Args;
use wharf_replication::Glob;

#[derive(Args)]
pub struct GlobBenchArgs {
    /// Matches timed per (pattern, name) pair; the median and maximum are shown.
    #[arg(long, default_value_t = 200)]
    rounds: usize,
    /// Fail if any single match takes longer than this many microseconds.
    #[arg(long, default_value_t = 1000)]
    bound_us: u64,
}

pub async fn run(args: GlobBenchArgs) -> Result<()> {
    let pattern_star = "*a".repeat(60) + "b";
    let patterns = [
        "*a*a*a*a*a*a*a*ab",
        "**a**a**a**a**a**a**a**ab",
        "?*?*?*?*?*?*?*?*b",
        pattern_star.as_str(),
        "{release,stable}-*",
        "shop/**",
        "v1.?",
    ];
    let names = [
        ("60 x 'a' (a tag)", "a".repeat(60)),
        ("128 x 'a' (the longest tag)", "a".repeat(128)),
        (
            "255 characters in 2 components",
            format!("{}/{}", "a".repeat(127), "a".repeat(127)),
        ),
    ];
    println!(
        "{:<28} {:<32} {:>10} {:>10}",
        "pattern", "name", "median", "max"
    );
    let mut worst = Duration::ZERO;
    for pattern in patterns {
        let glob = Glob::parse(pattern).map_err(anyhow::Error::msg)?;
        for (label, name) in &names {
            let mut times: Vec<Duration> = (0..args.rounds.max(1))
                .map(|_| {
                    let started = Instant::now();
                    std::hint::black_box(glob.matches(std::hint::black_box(name)));
                    started.elapsed()
                })
                .collect();
            times.sort();
            let (median, max) = (times[times.len() / 2], times[times.len() - 1]);
            worst = worst.max(max);
            let shown: String = pattern.chars().take(26).collect();
            println!("{shown:<28} {label:<32} {median:>10.1?} {max:>10.1?}");
        }
    }
    let bound = Duration::from_micros(args.bound_us);
    println!("slowest single match: {worst:.1?} (bound {bound:?})");
    ensure!(
        worst <= bound,
        "a match took {worst:?}, over the bound of {bound:?}"
    );
    Ok(())
}
