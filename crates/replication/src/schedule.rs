//! Cron schedules of policies, in UTC.

use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use croner::Cron;

/// A parsed cron expression.
#[derive(Clone, Debug)]
pub struct Schedule(Cron);

impl Schedule {
    /// Parses five fields (`min hour day month weekday`) or six with
    /// leading seconds.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .build()
            .parse(text)
            .map_err(|e| format!("cron schedule {text:?}: {e}"))?;
        Ok(Schedule(cron))
    }

    /// The first time strictly after `after`.
    pub fn next_after(&self, after: SystemTime) -> Option<SystemTime> {
        let after: DateTime<Utc> = after.into();
        let next = self.0.find_next_occurrence(&after, false).ok()?;
        Some(SystemTime::UNIX_EPOCH + Duration::from_millis(next.timestamp_millis().max(0) as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_occurrence_of_five_and_six_fields() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(3600 * 24 * 365);
        let every_minute = Schedule::parse("* * * * *").unwrap();
        let next = every_minute.next_after(start).unwrap();
        assert_eq!(next.duration_since(start).unwrap(), Duration::from_secs(60));
        let every_5s = Schedule::parse("*/5 * * * * *").unwrap();
        let next = every_5s.next_after(start).unwrap();
        assert_eq!(next.duration_since(start).unwrap(), Duration::from_secs(5));
        assert!(Schedule::parse("61 * * * *").is_err());
        assert!(Schedule::parse("nonsense").is_err());
    }
}
